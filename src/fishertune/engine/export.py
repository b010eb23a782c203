"""`fishertune export RUN --out DIR`: a trained run as a small, self-contained folder (see docs/export.md).

    DIR/config.yaml        the run's config; `model.weights` names the base backbone (hub id or file, with
                           `model.weights_sha256` for a file), so the base is rebuilt, not shipped
    DIR/head.safetensors   the decode head
    DIR/tuner/             the method's change only: tuner_config.json plus the mask methods' sparse delta
                           (delta.safetensors) or the adapter weights (tuner_weights.safetensors)
    DIR/export.json        format, method, trainable count, the base's weight hash, the run's results
    DIR/README.md          a model card

The base hash is the sha256 over every base-backbone tensor (name, dtype, shape, raw bytes) as built from
the config, before the method changes it; loading rebuilds the base, refuses one with another hash, then
applies the change and the head. Before writing, export rebuilds the model from what it is about to write
and checks that it equals the run's model.safetensors exactly, so an export always reproduces its run.
The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
import yaml
from torch import nn

from fishertune.atomic import check_new_folder, new_folder, save_tensors, write_json, write_text
from fishertune.data.specs import DatasetSpec
from fishertune.engine.assemble import build_base, method_options, run_classes
from fishertune.engine.checkpoint import model_state
from fishertune.engine.config import Config, load_config, save_config
from fishertune.errors import FisherTuneError
from fishertune.models.backbones import BACKBONES
from fishertune.models.offline_dinov2 import sha256_of
from fishertune.run_result import read_run_result
from fishertune.tensor_files import checked_tensors, read_tensors
from fishertune.tuners import load_tuner
from fishertune.version import __version__

FORMAT = "fishertune-export"
VERSION = 1
MANIFEST = "export.json"
HEAD_FILE = "head.safetensors"
TUNER_DIR = "tuner"
TUNER_FILES = ("tuner_config.json", "tuner_weights.safetensors", "delta.safetensors")
"""What of a run's tuner folder an export needs (the selection summary for plots stays behind)."""


def is_export(directory: str | Path) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def backbone_sha256(backbone: nn.Module) -> str:
    """sha256 over the backbone's tensors in name order: name, dtype, shape and raw bytes of each."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model_state(backbone).items()):
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(data.tobytes())
    return digest.hexdigest()


def rebuild(config: Config, tuner_dir: Path) -> tuple[nn.Module, str]:
    """(model with the saved tuner change applied, sha256 of its base backbone); the head is still fresh.

    A randomly initialised base is drawn as the trainer draws it: from torch.manual_seed(train.seed), here
    inside a forked RNG so the caller's random state is left alone.
    """
    method_options(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = build_base(config)
    base_hash = backbone_sha256(model.backbone)
    load_tuner(str(tuner_dir), model, method=config.method.name)
    return model, base_hash


def _load_head(model: nn.Module, path: Path) -> None:
    model.head.load_state_dict(checked_tensors(path, model_state(model.head), "decode head"), strict=False)


def export_run(run_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the export folder of a finished run; returns {"files": {name: bytes}, "model_bytes": n}."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    weights = run_dir / "model.safetensors"
    if is_export(run_dir):
        raise FisherTuneError(f"{run_dir} is an export already: copy the folder to share it again")
    for needed in (run_dir / "config.yaml", weights, run_dir / TUNER_DIR / TUNER_FILES[0]):
        if not needed.is_file():
            raise FisherTuneError(f"{run_dir} is not a finished run folder "
                                  f"(no {needed.relative_to(run_dir)})")
    check_new_folder(out_dir)  # a link, ".", a non-empty folder: refused before any work
    config = load_config(run_dir / "config.yaml")
    base_file = Path(config.model.weights or "").expanduser()
    if config.model.weights and base_file.is_file() and config.model.weights_sha256 is None:
        config.model.weights_sha256 = sha256_of(base_file)
    model, base_hash = rebuild(config, run_dir / TUNER_DIR)
    trained = read_tensors(weights, "model weights")
    head = {name.removeprefix("head."): t for name, t in trained.items() if name.startswith("head.")}
    model.head.load_state_dict(head)
    rebuilt = model_state(model)
    mismatch = [n for n, t in rebuilt.items() if n not in trained or not torch.equal(t, trained[n])]
    if mismatch or set(trained) != set(rebuilt):
        first = (mismatch or sorted(set(trained) ^ set(rebuilt)))[0]
        raise FisherTuneError(f"{run_dir}: the base backbone plus the saved method change does not reproduce "
                              f"model.safetensors (first difference: {first}); was the base weights file "
                              f"changed after training?")
    result = read_run_result(run_dir)
    results = {} if result is None else result.to_json()
    trainable = results.get("trainable_params")
    manifest = {"format": FORMAT, "version": VERSION, "method": config.method.name,
                "trainable_params": trainable, "base_sha256": base_hash, "results": results}
    with new_folder(out_dir, "export") as temp:  # a full disk names the export's file, not the run's
        (temp / TUNER_DIR).mkdir()
        save_config(config, temp / "config.yaml")
        save_tensors(temp / HEAD_FILE, model_state(model.head))
        for name in TUNER_FILES:
            if (run_dir / TUNER_DIR / name).is_file():
                shutil.copyfile(run_dir / TUNER_DIR / name, temp / TUNER_DIR / name)
        write_json(temp / MANIFEST, manifest)
        write_text(temp / "README.md", model_card(config, manifest, out_dir.name))
    files = {str(p.relative_to(out_dir)): p.stat().st_size for p in sorted(out_dir.rglob("*")) if p.is_file()}
    return {"files": files, "model_bytes": weights.stat().st_size}


def load_export(directory: str | Path, backbone: str | None = None) -> tuple[Config, nn.Module]:
    """(config, model in eval mode) from an export folder; `backbone` replaces the base's location
    (`model.weights`); a base whose weights hash differs from the export's is refused. Every file is checked
    before it is used (the manifest's hash and method, the method in config.yaml and tuner_config.json, the
    tensors of the head and of the method's change), since a damaged one would otherwise load into a model
    that evaluates without complaint and wrongly; each problem is one line naming the file."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    config = load_config(directory / "config.yaml")
    if manifest["method"] != config.method.name:
        raise FisherTuneError(f"{directory / MANIFEST} names the method {manifest['method']!r}, its "
                              f"config.yaml {config.method.name!r}: the export is damaged")
    if backbone is not None and not str(backbone).strip():
        raise FisherTuneError("the backbone location given is empty; give a hub id, folder or file")
    if backbone is not None:
        config.model.weights = str(backbone)
    elif config.model.weights is not None and not str(config.model.weights).strip():
        raise FisherTuneError(f"{directory / 'config.yaml'}: model.weights is empty; it names the base "
                              f"backbone (hub id, folder or file), or null for a random init")
    config.model.weights = _locate(config.model.weights, directory)
    weights = config.model.weights
    if weights is not None and looks_like_file(weights) and not Path(weights).expanduser().exists():
        raise FisherTuneError(f"the base backbone of {directory}, {weights}, is not found: put it there, in "
                              f"the export folder or next to it, or give its location (load_pretrained(DIR, "
                              f"backbone=PATH), eval/predict/export --onnx ... --backbone PATH)")
    model, base_hash = rebuild(config, directory / TUNER_DIR)
    if base_hash != manifest["base_sha256"]:
        source = config.model.weights or "a random init"
        raise FisherTuneError(f"the base backbone built from {source} is not the one {directory} was made "
                              f"from (weights sha256 {base_hash[:12]}..., expected "
                              f"{manifest['base_sha256'][:12]}...)")
    _load_head(model, directory / HEAD_FILE)
    return config, model.eval()


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        raise FisherTuneError(f"{directory} is not an export folder (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FisherTuneError(f"{path} is not valid JSON: {error}") from None
    kind = [manifest.get("format"), manifest.get("version")] if isinstance(manifest, dict) else None
    if kind != [FORMAT, VERSION]:
        raise FisherTuneError(f"{path}: not a {FORMAT} version {VERSION} manifest")
    digest = manifest.get("base_sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")):
        raise FisherTuneError(f"{path}: base_sha256 must be the base's weights hash, 64 hex digits, got "
                              f"{_short(digest)}")
    if not isinstance(manifest.get("method"), str):
        raise FisherTuneError(f"{path}: method must be the name of the export's method, got "
                              f"{_short(manifest.get('method'))}")
    return manifest


def _short(value) -> str:
    """A value of a damaged file as a message shows it: repr, cut to a line's worth."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _locate(weights: str | None, directory: Path) -> str | None:
    """Where an export's base weights file is: an absolute path as written; a relative one against the
    export folder first; else a file of the same name inside the export folder or next to it; else the path
    as written, from the current folder (a Hub id or a missing file is left to the loader to name)."""
    if weights is None or not looks_like_file(weights):
        return weights
    given = Path(weights).expanduser()
    if given.is_absolute() and given.exists():
        return weights
    candidates = ([] if given.is_absolute() else [directory / given]) + [directory / given.name,
                                                                         directory.parent / given.name]
    return next((str(c) for c in candidates if c.is_file()), weights)


def looks_like_file(weights: str) -> bool:
    return weights.endswith((".safetensors", ".pth", ".pt")) or weights.startswith(("/", ".", "~"))


# -- the model card ----------------------------------------------------------------------------------------

def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def hub_metadata(config: Config, results: dict | None, default: tuple[str, str] | None) -> list[str]:
    """The model card's YAML header as the Hugging Face Hub reads it: licence (the base's, where known),
    base model (a Hub id), library, tags, source data and the run's own mIoU (model-index)."""
    m = config.model
    weights = None if m.weights is None else str(m.weights)
    hub_id = weights if weights and not looks_like_file(weights) and not Path(weights).exists() else None
    licence = default[1] if (weights is None and default and not m.backbone_config) else "other"
    meta: dict = {"license": licence, **({"base_model": hub_id} if hub_id else {}),
                  "library_name": "fishertune", "pipeline_tag": "image-segmentation",
                  "tags": list(dict.fromkeys(["semantic-segmentation", "domain-generalization", "fishertune",
                                              config.method.name, m.backbone])),
                  "datasets": [DatasetSpec.parse(spec).name for spec in config.data.sources]}
    if results:
        scores = [("source_val", results.get("source_miou")), *results.get("target_miou", {}).items()]
        meta["model-index"] = [{"name": config.method.name, "results": [
            {"task": {"type": "image-segmentation"}, "dataset": {"name": domain, "type": domain},
             "metrics": [{"type": "mean_iou", "value": round(value, 2), "name": "mIoU (%)"}]}
            for domain, value in scores if value is not None]}]
    return ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]


def model_card(config: Config, manifest: dict, name: str) -> str:
    """README.md of an export: what it is, what it was trained on, how well it did, how to load it."""
    m, results = config.model, manifest["results"]
    default = BACKBONES.lookup(m.backbone).default_weights
    if m.weights is None and default is not None and not m.backbone_config:
        base = f"`{m.backbone}`: {default[0]}"
    elif m.weights is None:
        base = f"`{m.backbone}`, randomly initialised (seed {config.train.seed}; for tests only)"
    elif m.weights_sha256:
        base = f"`{m.backbone}` from the file `{m.weights}` (sha256 `{m.weights_sha256}`)"
    else:
        base = f"`{m.backbone}` from `{m.weights}`"
    trainable = manifest.get("trainable_params")
    classes = run_classes(config)
    lines = [*hub_metadata(config, results, default), f"# {name}", "",
             f"A semantic segmenter fine-tuned with **{config.method.name}**, written by `fishertune export` "
             f"(FisherTune {__version__}).", "",
             "| | |", "|---|---|",
             f"| base backbone | {base} |",
             f"| decode head | `{m.head}` |",
             f"| method | `{config.method.name}` {json.dumps(config.method.options)} |",
             f"| trainable backbone parameters | {'n/a' if trainable is None else f'{trainable:,}'} |",
             f"| classes | {classes.num_classes}: {', '.join(classes.names)} |",
             f"| source data | {', '.join(f'`{spec}`' for spec in config.data.sources)} |",
             f"| base weights hash | `{manifest['base_sha256']}` |", ""]
    if results:
        lines += ["## Evaluation (from the run)", "", "| data | mIoU (%) |", "|---|---|",
                  f"| source validation | {_fmt(results.get('source_miou'))} |"]
        lines += [f"| {domain} | {_fmt(v)} |" for domain, v in results.get("target_miou", {}).items()]
        lines += [f"| mean of targets | {_fmt(results.get('mean_target_miou'))} |", ""]
    lines += ["## How to load", "",
              "The folder holds only what the method changed; the base backbone is rebuilt from its name "
              "(a file is looked up as written, then next to this folder) and checked against the hash "
              "above.", "",
              "```python", "import fishertune", "",
              f"model = fishertune.load_pretrained({name!r})  # backbone='path/to/base' if it moved",
              "ids = model.predict(image)  # PIL image, HxWx3 uint8 array or float tensor -> class ids",
              "```", "",
              "```", f"fishertune predict {name} street.jpg --out predictions",
              f"fishertune eval {name} --data folder:PATH", f"fishertune export {name} --onnx model.onnx",
              "```", ""]
    return "\n".join(lines)
