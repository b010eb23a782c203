"""The demo's record of one finished run: what the report needs, small enough to commit, without weights.

A full demo takes longer than one working session, and its run folders hold weights (too large to
commit). So after each run the demo writes a record into the results folder, and a later call on the
same folder (or on a copy of its committed `records/`) reuses a record whose config matches instead
of training again:

    DIR/records/<variant>/<key>.json  the run's results entry; its config, with the results folder written
                                      as "$DIR" (so a copy elsewhere still matches); its source_val
                                      curve ([step, mIoU] for every evaluation the run logged); for a mask
                                      method its selection: growth history, per-tensor mean score, the
                                      share of the selection per module type, per block and per (block,
                                      module type) cell, and the mask's tensor layout
    DIR/records/<variant>/<key>.npz   arrays (numpy's compressed .npz, read with allow_pickle=False, so
                                      loading runs no code): per target domain the per-image intersection
                                      and union counts and the example predictions (uint8 class ids), and
                                      the final mask as np.packbits over the tensors in the JSON's order

`key` is "seed<N>" for a reported run and "sweep-<param>=<value>" for a learning-rate sweep run (the
sweep's records hold the results entry only). The JSON names the .npz's SHA-256, so a pair whose
halves do not belong together is never read as a record.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fishertune.atomic import read_json, write_atomic, write_json
from fishertune.engine.build import load_run
from fishertune.engine.evaluator import PER_IMAGE_FILE, load_per_image
from fishertune.engine.run_log import read_log
from fishertune.errors import FisherTuneError, InputError
from fishertune.report.breakdown import block_shares, module_shares, selection_rows
from fishertune.run_result import RunResult, read_run_result
from fishertune.tuners import TUNERS
from fishertune.tuners.mask_methods import SELECTION_FILE, load_selection

RECORDS = "records"
DIR_TOKEN = "$DIR"


def record_path(out: Path, variant: str, key: str) -> Path:
    """The record's JSON file (its arrays: the same path with suffix .npz)."""
    return out / RECORDS / variant / f"{key}.json"


def portable_config(config: dict, out: Path) -> dict:
    """The config dict with the results folder's absolute path written as "$DIR" in every string."""
    root = str(out.resolve())
    text = json.dumps(config)
    return json.loads(text.replace(json.dumps(root)[1:-1], DIR_TOKEN))


def current_option_names(config: dict) -> dict:
    """The config with its method options under their current names (the tuner config's `RENAMED`), so
    that a record written before an option was renamed still matches the plan that uses the new name."""
    method = config.get("method") or {}
    if method.get("name") not in TUNERS:
        return config
    renamed = getattr(TUNERS[method["name"]].config_class, "RENAMED", {})
    options = {renamed.get(key, key): value for key, value in (method.get("options") or {}).items()}
    return {**config, "method": {**method, "options": options}}


@dataclass
class Record:
    """One run as the report sees it."""

    result: RunResult  # the run's result (trainable_params read from the tuner after training)
    per_image: dict[str, tuple[np.ndarray, np.ndarray]]  # domain -> (intersection, union) [images, classes]
    predictions: dict[str, np.ndarray]  # domain -> uint8 [examples, H, W]
    selection: dict | None = None  # mask methods: history, score_mean, numel, rows, tensors
    packed_mask: np.ndarray | None = None
    curve: list[list] = field(default_factory=list)  # [[step, source_val mIoU], ...] as the run logged them

    def masks(self) -> dict[str, np.ndarray]:
        """The final selection, {tensor name: bool array of its shape}."""
        if self.selection is None or self.packed_mask is None:
            return {}
        shapes = [(name, tuple(shape)) for name, shape in self.selection["tensors"]]
        flat = np.unpackbits(self.packed_mask, count=sum(math.prod(s) for _, s in shapes)).astype(bool)
        out, start = {}, 0
        for name, shape in shapes:
            size = math.prod(shape)
            out[name] = flat[start:start + size].reshape(shape)
            start += size
        return out

    def scores(self) -> dict[str, torch.Tensor]:
        """Per-tensor mean selection scores, expanded to each tensor's size (as `load_selection` gives)."""
        selection = self.selection or {}
        return {n: torch.tensor(selection["score_mean"][n]).expand(k) for n, k in selection["numel"].items()}


def write_record(out: Path, variant: str, key: str, config: dict, run_dir: Path,
                 examples: dict[str, torch.Tensor] | None) -> Record:
    """The record of the finished run in `run_dir`. With `examples` ({domain: images [k, 3, H, W]}) it
    also keeps the per-image counts of every target domain, the predictions on those images and, for a
    mask method, its final selection."""
    result = read_run_result(run_dir)
    curve = [[r["step"], r["source_miou"]] for r in read_log(run_dir)
             if r.get("phase") == "val" and r.get("source_miou") is not None]
    record = Record(result, {}, {}, curve=curve)
    if examples is not None:
        if result.target_miou:
            if not (run_dir / PER_IMAGE_FILE).is_file():
                raise FisherTuneError(f"{run_dir} has no {PER_IMAGE_FILE} (a run from before per-image "
                                      f"counts were kept); remove the folder to train it again")
            counts = load_per_image(run_dir / PER_IMAGE_FILE)
            record.per_image = {d: (counts[d]["intersection"].numpy(), counts[d]["union"].numpy())
                                for d in result.target_miou if d in counts}  # evaluation order, as read
        record.predictions = _predict(run_dir, examples)
        record.selection, record.packed_mask = _selection(run_dir / "tuner")
    arrays = {f"per_image/{d}/{kind}": a for d, counts in record.per_image.items()
              for kind, a in zip(("intersection", "union"), counts)}
    arrays.update({f"predictions/{d}": p for d, p in record.predictions.items()})
    if record.packed_mask is not None:
        arrays["mask"] = record.packed_mask
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    path = record_path(out, variant, key)
    write_atomic(path.with_suffix(".npz"), lambda temp: Path(temp).write_bytes(data))
    write_json(path, {"config": portable_config(config, out), "entry": result.to_json(), "curve": curve,
                      "selection": record.selection,
                      "arrays": {"file": path.with_suffix(".npz").name,
                                 "sha256": hashlib.sha256(data).hexdigest()}})
    return record


def read_record(out: Path, variant: str, key: str, config: dict) -> Record | None:
    """The record of this run if one exists for exactly this config (else None)."""
    path = record_path(out, variant, key)
    if not path.is_file():
        return None
    saved = _checked_record(path)
    if current_option_names(saved["config"]) != portable_config(config, out):
        return None
    arrays_path = path.with_name(saved["arrays"]["file"])
    data = arrays_path.read_bytes() if arrays_path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != saved["arrays"]["sha256"]:
        print(f"[demo] {path}: its arrays file is missing or is not the one it was written with; "
              f"running it again")
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        per_image: dict[str, list] = {}
        predictions = {}
        for name in arrays.files:
            kind, _, rest = name.partition("/")
            if kind == "per_image":
                domain, _, which = rest.rpartition("/")
                per_image.setdefault(domain, [None, None])[0 if which == "intersection" else 1] = arrays[name]
            elif kind == "predictions":
                predictions[rest] = arrays[name]
        mask = arrays["mask"] if "mask" in arrays.files else None
    result = RunResult.from_json(saved["entry"], f"{path} entry")
    order = list(result.target_miou)  # the domains in evaluation order
    return Record(result, {d: tuple(per_image[d]) for d in order if d in per_image},
                  {d: predictions[d] for d in order if d in predictions}, saved["selection"], mask,
                  saved.get("curve", []))


def _checked_record(path: Path) -> dict:
    """The record's JSON, refused (one InputError naming the file) unless it has the fields the demo reads:
    a damaged record never reaches results.json."""
    saved = read_json(path, "demo record")
    problem = _record_problem(saved)
    if problem:
        raise InputError(f"demo record {path} is damaged: {problem}; delete it and "
                         f"{path.with_suffix('.npz').name} to run that method again")
    return saved


def _record_problem(saved) -> str | None:
    if not isinstance(saved, dict) or not {"config", "entry", "selection", "arrays"} <= set(saved):
        return "it must hold config, entry, selection and arrays"
    arrays, entry = saved["arrays"], saved["entry"]
    if not (isinstance(arrays, dict) and isinstance(arrays.get("sha256"), str)
            and isinstance(arrays.get("file"), str) and Path(arrays["file"]).name == arrays["file"] != ""):
        return "arrays must name a file in its folder and its sha256"
    numbers = (int, float)
    curve = saved.get("curve", [])
    if not isinstance(curve, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, numbers) for x in p) for p in curve):
        return "curve must be a list of [step, mIoU] pairs"
    if not (isinstance(entry, dict) and isinstance(entry.get("target_miou"), dict)
            and all(isinstance(v, numbers) for v in entry["target_miou"].values())
            and all(isinstance(entry.get(k), numbers) or entry.get(k) is None
                    for k in ("trainable_params", "source_miou", "mean_target_miou", "train_seconds"))):
        return "entry must hold target_miou {domain: mIoU} and numbers (or null) for the other results"
    return None


@torch.no_grad()
def _predict(run_dir: Path, examples: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    _, model = load_run(run_dir)
    return {d: model.predict(images).argmax(1).to(torch.uint8).numpy() for d, images in examples.items()}


def _selection(tuner_dir: Path) -> tuple[dict | None, np.ndarray | None]:
    """A mask method's final selection from its saved tuner folder (None, None for other methods)."""
    if not (tuner_dir / SELECTION_FILE).is_file():
        return None, None
    selection = load_selection(str(tuner_dir))
    masks = {name: selection["masks"][name].numpy() for name in sorted(selection["masks"])}
    scores = selection["scores"]
    summary = {"tensors": [[name, list(mask.shape)] for name, mask in masks.items()],
               "selected": int(sum(int(m.sum()) for m in masks.values())),
               "history": selection["history"],
               "score_mean": {n: float(s.double().mean()) if s.numel() else 0.0 for n, s in scores.items()},
               "numel": {n: s.numel() for n, s in scores.items()},
               "share_by_type": module_shares(masks),
               "share_by_block": block_shares(masks),
               "rows": selection_rows(masks)}
    packed = np.packbits(np.concatenate([m.reshape(-1) for m in masks.values()]))
    return summary, packed
