"""Shared by the benchmarks: one method's training on the demo's setting, phase by phase; interleaved medians.

The config is the demo's composition (protocols/synthetic + backbones/dinov2_s_offline + the method's
config + the demo recipe: crop 112, batch 8, 2 prepare batches, FisherTune's shipped options). The data are
random images and labels of that size, made once (data loading and augmentation are not measured), and
the training-time feature perturbation of the demo recipe is off (it costs every method the same).
Timed phases: head warm-up step, the tuner's prepare split into Fisher estimation and selection,
forward, backward, optimiser step (MaskedAdamW applies the masks), the running g² of reestimate
"running" (recorded after every step), and every mask event of after_step (estimation, selection).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

from fishertune.engine.build import build_model
from fishertune.engine.config import PACKAGED_CONFIGS, load_config
from fishertune.engine.precision import autocast
from fishertune.engine.trainer import per_sample_loss, seed_everything
from fishertune.tuners import build_tuner


def median_seconds(runs: dict[str, callable], repeats: int, warm_up: bool = True) -> dict[str, float]:
    """Median wall seconds of each callable, the callables interleaved in every repetition (after one
    untimed call of each with `warm_up`)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values() if warm_up else ():
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def demo_plan() -> dict:
    return yaml.safe_load((PACKAGED_CONFIGS / "demo" / "plan.yaml").read_text())


def variants() -> dict[str, dict]:
    """name -> {"method": config name, "options": {...}}: the demo plan's variants (fishertune: as shipped;
    drfim: drfim-select, DR-FIM on the plain Fisher; fim: fim-select; random: random-select), and
    random-row, random at row granularity."""
    plan = demo_plan()["variants"]
    out = {"full": {"method": "full", "options": {}}, "lora": {"method": "lora", "options": {}}}
    for name, source in (("random", "random-select"), ("fim", "fim-select"), ("drfim", "drfim-select"),
                         ("fishertune", "fishertune"),
                         ("fishertune-row", "fishertune-row"), ("fishertune-running", "fishertune-running")):
        out[name] = {"method": "fishertune", "options": dict(plan[source].get("options") or {})}
    out["random-row"] = {"method": "fishertune",
                         "options": {**out["random"]["options"], "granularity": "row"}}
    return out


VIT_L = {"backbone": "dinov2", "weights": None, "out_indices": [7, 11, 15, 23],
         "backbone_config": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                             "intermediate_size": 4096, "patch_size": 14, "image_size": 518}}
"""A ViT-L/14-shaped DINOv2 with random weights (scripts/gpu_check.sh)."""


def demo_config(method: str, options: dict, checkpointing: bool = False, amp: str = "off",
                large: bool = False, crop: int | None = None, batch: int | None = None,
                chunk_size: int | None = None, backend: str | None = None, reestimate: str | None = None):
    """The demo's config of `method`; large: the ViT-L shape instead of DINOv2-S; crop/batch overrides;
    chunk_size: FisherTune's per-sample gradients per vmap call (default: the tuner's, 2 with large);
    backend: how the per-sample Fisher is computed (default: the tuner's, layerwise); reestimate: what a
    mask event's scores are (default: the tuner's, exact)."""
    recipe = demo_plan()["recipe"]
    chunk_size = chunk_size or (2 if large else None)  # large: bounded per-sample gradients (GPU memory)
    if method == "fishertune":
        overrides = {"chunk_size": chunk_size, "backend": backend, "reestimate": reestimate}
        options = {**options, **{key: value for key, value in overrides.items() if value}}
    data = {**recipe["data"], **({"crop": crop} if crop else {}), **({"batch_size": batch} if batch else {})}
    raw = {"base": ["protocols/synthetic.yaml", "backbones/dinov2_s_offline.yaml", f"methods/{method}.yaml"],
           "method": {"name": method, "options": options}, "data": data,
           "train": {**recipe["train"], "activation_checkpointing": checkpointing, "amp": amp,
                     "perturb": {"enabled": False}},
           **({"model": VIT_L} if large else {})}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "probe.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load_config(path)


class Probe:
    """A model, its tuner and fixed random batches; `times[phase]` lists seconds of each timed call."""

    def __init__(self, variant: str, checkpointing: bool = False, amp: str = "off", seed: int = 0,
                 base: torch.nn.Module | None = None, update_every: int | None = None, **shape):
        """base: a segmentor to copy instead of building one (building loads the weights: slow);
        update_every: override of the mask events' period (a shorter probe with the same events);
        shape: demo_config's large / crop / batch / chunk_size / backend / reestimate."""
        spec = variants()[variant]
        options = dict(spec["options"])
        if update_every is not None and spec["method"] == "fishertune":
            options["update_every"] = update_every  # replaces the shipped update_fraction
        self.config = demo_config(spec["method"], options, checkpointing, amp, **shape)
        seed_everything(seed)
        if base is None:
            self.model, self.tuner = build_model(self.config)
        else:
            self.model = copy.deepcopy(base)
            self.tuner = build_tuner(self.config.method.name, self.model, **self.config.method.options)
        self.model.backbone.activation_checkpointing = checkpointing
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        d = self.config.data
        g = torch.Generator().manual_seed(seed)
        self.batches = [{"image": torch.rand(d.batch_size, 3, d.crop, d.crop, generator=g),
                         "label": torch.randint(0, 19, (d.batch_size, d.crop, d.crop), generator=g)}
                        for _ in range(4)]
        self.prepare_batches = self.batches[:self.config.train.prepare_batches]
        self.times: dict[str, list[float]] = defaultdict(list)
        self.optimizer = None
        self.phase = "prepare"
        fisher = getattr(self.tuner, "selector", None)
        if fisher is not None:  # time estimation and selection wherever they are called from
            for name in ("estimate", "select"):
                setattr(fisher, name, self._timed(name, getattr(fisher, name), in_phase=True))
            fisher.record_gradients = self._timed("running g2", fisher.record_gradients)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _timed(self, label: str, fn, in_phase: bool = False):
        """fn, timed into times[label] (times["prepare label"] / ["event label"] with in_phase)."""
        key = (lambda: f"{self.phase} {label}") if in_phase else (lambda: label)

        def run(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self._sync()
            self.times[key()].append(time.perf_counter() - start)
            return out
        return run

    def _loss(self, batch: dict) -> torch.Tensor:
        with autocast(self.device, self.config.train.amp):
            return self.model.loss(batch["image"].to(self.device), batch["label"].to(self.device)).float()

    def warm_up_head_step(self) -> None:
        """One head-only step (backbone frozen), as the trainer's warm-up phase."""
        for p in self.model.backbone.parameters():
            p.requires_grad_(False)
        head = torch.optim.AdamW(self.model.head.parameters(), lr=1e-3)
        head.zero_grad()
        self._timed("warm-up step", lambda: (self._loss(self.batches[0]).backward(), head.step()))()

    def prepare(self) -> None:
        t = self.config.train
        self.model.train()
        self.phase = "prepare"
        self._timed("prepare total", self.tuner.prepare)(self.prepare_batches, per_sample_loss)
        self.optimizer = self.tuner.build_optimizer(lr=t.lr, head_lr=t.head_lr, weight_decay=t.weight_decay)
        self.phase = "event"

    def step(self, i: int) -> None:
        batch = self.batches[i % len(self.batches)]
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._timed("forward", self._loss)(batch)
        self._timed("backward", loss.backward)()
        self._timed("optimiser", self.optimizer.step)()
        self.tuner.after_step(i, self.config.train.steps, self.prepare_batches, per_sample_loss,
                              self.optimizer)
