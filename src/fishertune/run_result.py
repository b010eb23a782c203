"""A run's result as one typed object: the trainer writes it, the benchmark averages it over seeds, the CLI
prints it and the report reads it (the results.json contract in docs/cli.md; mIoU in percent).

results.json::

    {"schema_version": 1,
     "setup": ..., "sweep": ..., ...          # optional sections of a benchmark's results (docs/benchmark.md)
     "methods": {"<method>": RunResult.to_json(), ...}}

Files written before the version was recorded (no "schema_version", the same layout) are read as version 1,
and so is the older flat shape `{"<method>": {...}}` without "methods".
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fishertune.atomic import read_json
from fishertune.errors import InputError

SCHEMA_VERSION = 1
"""Version of the results.json layout written by `results_json`; raise it when a field changes meaning."""

CORE_FIELDS = ("trainable_params", "source_miou", "target_miou", "mean_target_miou", "train_seconds")
"""Written for every result, null when unknown (e.g. source_miou of a run without data.val)."""


@dataclass(frozen=True)
class RunResult:
    """The numbers of one run, or of one method over several seeds (then each field is the mean over
    `seeds`, one RunResult per seed with its `seed`)."""

    trainable_params: int | None = None
    """Backbone-side weights the method updated (read from the method after training)."""
    source_miou: float | None = None
    """mIoU on the source validation set (data.val); None without one."""
    target_miou: dict[str, float] = dataclasses.field(default_factory=dict)
    """mIoU per target domain, in evaluation order."""
    mean_target_miou: float | None = None
    train_seconds: float | None = None
    head_params: int | None = None
    """Weights of the decode head, which every method trains."""
    per_class_iou: dict[str, dict[str, float | None]] | None = None
    """Per target domain: IoU per class name (None: class absent from prediction and label)."""
    seed: int | None = None
    seeds: list[RunResult] | None = None

    @classmethod
    def of_seeds(cls, runs: list[RunResult]) -> RunResult:
        """One method's result from its per-seed runs (each with its `seed`): the mean of every number, and
        the runs themselves; one run is kept whole (head_params and per-class IoU too)."""
        if len(runs) == 1:
            return dataclasses.replace(runs[0], seed=None, seeds=list(runs))
        domains = list(runs[0].target_miou)
        brief = [dataclasses.replace(run, head_params=None, per_class_iou=None, seeds=None) for run in runs]
        return cls(trainable_params=runs[0].trainable_params,
                   source_miou=statistics.fmean(r.source_miou for r in runs),
                   target_miou={d: statistics.fmean(r.target_miou[d] for r in runs) for d in domains},
                   mean_target_miou=statistics.fmean(r.mean_target_miou for r in runs),
                   train_seconds=statistics.fmean(r.train_seconds for r in runs), seeds=brief)

    def to_json(self) -> dict[str, Any]:
        """The results.json entry: the core fields always, the others when set."""
        out: dict[str, Any] = {} if self.seed is None else {"seed": self.seed}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "seed" or (value is None and f.name not in CORE_FIELDS):
                continue
            out[f.name] = [run.to_json() for run in value] if f.name == "seeds" else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "result") -> RunResult:
        """A results.json entry (any version so far); missing fields are None. Unknown fields and values of
        the wrong kind are an InputError naming `where`."""
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: expected a mapping of result fields, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in names]
        if unknown:
            raise InputError(f"{where}: unknown result field {unknown[0]!r}; valid: {', '.join(names)}")
        for key in ("target_miou", "per_class_iou"):
            if data.get(key) is not None and not isinstance(data[key], Mapping):
                raise InputError(f"{where}: {key} must map domain -> mIoU")
        seeds = data.get("seeds")
        if seeds is not None and not isinstance(seeds, list):
            raise InputError(f"{where}: seeds must be a list of per-seed results")
        fields = dict(data)
        fields["target_miou"] = dict(data.get("target_miou") or {})
        if seeds is not None:
            fields["seeds"] = [cls.from_json(run, f"{where} seed {i}") for i, run in enumerate(seeds)]
        return cls(**fields)


def results_json(methods: Mapping[str, RunResult], **sections: Any) -> dict[str, Any]:
    """A results.json document: the schema version, the optional `sections` (setup, sweep, ...) in the given
    order, then the methods."""
    return {"schema_version": SCHEMA_VERSION, **sections,
            "methods": {name: result.to_json() for name, result in methods.items()}}


def methods_from_json(results: Mapping[str, Any]) -> dict[str, RunResult]:
    """The per-method results of a results.json document, in the order given (either shape, any version)."""
    if not isinstance(results, Mapping):
        raise InputError(f"results: expected a mapping, got {type(results).__name__}")
    version = results.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InputError(f"results schema_version {version!r} is not one this FisherTune reads "
                         f"({SCHEMA_VERSION}); upgrade FisherTune")
    methods = results.get("methods", None)
    if methods is None:  # the flat shape
        methods = {k: v for k, v in results.items()
                   if isinstance(v, Mapping) and ("target_miou" in v or "seeds" in v)}
    if not isinstance(methods, Mapping) or not methods:
        raise InputError("results hold no methods: expected results['methods'][name] with target_miou")
    return {name: RunResult.from_json(entry, f"method {name!r}") for name, entry in methods.items()}


def read_run_result(run_dir: str | Path) -> RunResult | None:
    """The result of the one method of a run folder's results.json (None when the run has not finished)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    saved = read_json(path, "run results")
    try:
        methods = methods_from_json(saved)
    except InputError as error:
        raise InputError(f"run results {path}: {error}") from None
    if len(methods) != 1:
        raise InputError(f"{path} holds {len(methods)} methods; a run folder's results hold one")
    (result,) = methods.values()
    return result
