"""A saved tuner whose file of its own is missing, of another shape, or otherwise tampered with is refused
in one line by every method (issue 25): a missing adapter file used to load as the untouched base."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tuner_helpers import make_batches, make_segmentor, segmentation_loss

from fishertune.errors import FisherTuneError, InputError
from fishertune.models import build_segmentor, tiny_backbone_config
from fishertune.tuners import TUNERS, build_tuner, load_tuner
from fishertune.tuners.base import WEIGHTS_FILE
from fishertune.tuners.mask_methods import DELTA_FILE, MaskTuner

OPTIONS = {"lora": {"rank": 2}, "rein": {"num_tokens": 4, "token_rank": 2}, "vpt": {"num_prompts": 2},
           "adaptformer": {"bottleneck": 4}, "childtune": {"budget": 0.1}, "fish": {"budget": 0.1},
           "random": {"budget": 0.1}, "fishertune": {"budget": 0.1, "ratio_min": 0.05, "growth_steps": 0.2,
                                                     "update_every": 1, "reestimate": False}}
CHANGING = sorted(m for m in TUNERS if m != "frozen")
"""Every method that saves a change of its own (frozen saves none)."""


def saved(method: str, folder: Path) -> Path:
    """`method` prepared on the tiny base (the mask methods choose their mask) and saved to folder/method."""
    model = make_segmentor()
    tuner = build_tuner(method, model, **OPTIONS.get(method, {}))
    tuner.prepare(make_batches(), segmentation_loss)
    tuner.save_pretrained(str(folder / method))
    return folder / method


def change_file(method: str) -> str:
    return DELTA_FILE if issubclass(TUNERS[method], MaskTuner) else WEIGHTS_FILE


def refused(folder: Path, model=None) -> str:
    """The one-line message of loading the saved tuner in `folder` onto a fresh base."""
    with pytest.raises(FisherTuneError) as error:
        load_tuner(str(folder), make_segmentor() if model is None else model)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_every_changing_method_is_covered():
    assert set(CHANGING) | {"frozen"} == set(TUNERS)


@pytest.mark.parametrize("method", CHANGING)
def test_a_missing_change_file_is_refused(method, tmp_path):
    folder = saved(method, tmp_path)
    load_tuner(str(folder), make_segmentor())  # as saved: loads
    (folder / change_file(method)).unlink()
    message = refused(folder)
    assert change_file(method) in message and ("missing" in message or "no delta file" in message)


@pytest.mark.parametrize("method", CHANGING)
def test_a_change_of_another_shape_is_refused(method, tmp_path):
    folder = saved(method, tmp_path)
    torch.manual_seed(0)
    config = {**tiny_backbone_config("dinov2"), "hidden_size": 48}
    wider = build_segmentor({"name": "dinov2", "config": config}, "linear")
    assert "shape" in refused(folder, wider)


def tamper_weights(path: Path, how: str) -> None:
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    if how == "wrong_shape":
        tensors[name] = torch.zeros(1, 1)
    elif how == "missing_tensor":
        del tensors[name]
    elif how == "unexpected_tensor":
        tensors["backbone.bogus"] = torch.zeros(1)
    elif how == "wrong_dtype":
        tensors[name] = tensors[name].half()
    else:
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan" if how == "nan" else "inf")
    save_file(tensors, str(path))


TAMPERED_WEIGHTS = {"wrong_shape": "has shape [1, 1], the model's is",
                    "missing_tensor": "lacks the tensor",
                    "unexpected_tensor": "unexpected tensor 'backbone.bogus'",
                    "wrong_dtype": "is float16, the model's is float32",
                    "nan": "holds NaN or infinite values",
                    "inf": "holds NaN or infinite values"}


@pytest.mark.parametrize("how", TAMPERED_WEIGHTS)
@pytest.mark.parametrize("method", [m for m in CHANGING if change_file(m) == WEIGHTS_FILE])
def test_tampered_adapter_weights_are_refused(method, how, tmp_path):
    folder = saved(method, tmp_path)
    tamper_weights(folder / WEIGHTS_FILE, how)
    message = refused(folder)
    assert f"saved {method} weights {folder / WEIGHTS_FILE}" in message and TAMPERED_WEIGHTS[how] in message


def test_a_stray_weights_file_is_refused_by_a_method_that_saves_none(tmp_path):
    frozen, full = saved("frozen", tmp_path), saved("full", tmp_path)
    load_tuner(str(frozen), make_segmentor())
    (frozen / WEIGHTS_FILE).write_bytes((full / WEIGHTS_FILE).read_bytes())
    assert "saved frozen weights" in refused(frozen) and "unexpected tensor" in refused(frozen)


def test_a_saved_tuner_of_another_method_is_refused_when_the_method_is_known(tmp_path):
    """The mask methods share one file: a childtune delta would load as fishertune without complaint."""
    folder = saved("childtune", tmp_path)
    message = "names the method 'childtune', but the run's config names 'fishertune'"
    with pytest.raises(InputError, match=message):
        load_tuner(str(folder), make_segmentor(), method="fishertune")
    assert type(load_tuner(str(folder), make_segmentor(), method="childtune")).name == "childtune"
