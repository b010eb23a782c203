"""The training loop: head warm-up, the tuner's prepare, tuning with its hooks, checkpoints, evaluation.

    Phase.WARMUP  step 0 .. warmup_steps-1        head only (backbone frozen), AdamW at head_lr
                  tuner.prepare(batches, loss)    e.g. FisherTune's DR-FIM estimate and selection
    Phase.TUNE    step warmup_steps .. +steps-1   tuner's optimiser, linear lr warm-up then poly/cosine
                                                  decay; tuner.after_step after each step (mask growth)

`batches` are the run's estimation batches (`Trainer.estimation_batches`, `train.prepare_batches` of
them), drawn once when the trainer is built. `Trainer.run()` does all of it; `warm_up_head()` and
`estimate()` are the first two steps alone (`fishertune fisher` runs them).

Each optimiser step sums the gradients of `grad_accum` micro-batches. The training loss is the mean of
per-image losses, so a distributed run (each process a slice of the global batch, gradients averaged by
DDP) computes the same gradient as one process on the whole batch.

Determinism and resume: the data order of epoch e is a permutation seeded by (seed, e) and each item's
augmentation is seeded by (seed, e, index), so the batch at any position is a function of the position
alone; every DataLoader has its own seeded generator, so loading data never draws from the global RNG
that dropout and the like use. A checkpoint stores model, optimiser, scheduler, tuner state and all RNG
states; a resumed run rebuilds the batch stream at `step * grad_accum` micro-batches and continues
bit-identically on CPU.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
from collections.abc import Iterator
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from fishertune.atomic import DISK_FULL, disk_full_message, write_json
from fishertune.engine import distributed
from fishertune.engine.build import build_eval_datasets, build_model, build_source_datasets, run_classes
from fishertune.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from fishertune.engine.config import Config, save_config
from fishertune.engine.evaluator import (
    PER_IMAGE_FILE,
    EvalSettings,
    evaluate,
    evaluate_targets,
    save_per_image,
)
from fishertune.engine.precision import autocast, grad_scaler
from fishertune.engine.run_folder import RunFolder, open_run
from fishertune.engine.run_log import RunLogger, read_log
from fishertune.errors import FisherTuneError, InputError, RunInterrupted, UsageError
from fishertune.registry import did_you_mean
from fishertune.run_result import RunResult, results_json
from fishertune.sparse import FeaturePerturbation
from fishertune.tuners.blocks import layer_module_names

if TYPE_CHECKING:
    from fishertune.sparse import MaskSelector

PREPARE_EPOCH = 2**31
"""Augmentation epoch of the tuner's estimation batches, apart from every training epoch."""


class Phase(str, Enum):
    """A phase of the run. Checkpoints (state.json) and log.jsonl store the value, a plain string."""

    WARMUP = "warmup"
    """The head trains alone, the backbone frozen (train.warmup_steps steps)."""
    TUNE = "tune"
    """The tuner's optimiser and hooks (train.steps steps)."""


class TrainingDiverged(InputError):
    """The loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def per_sample_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """loss_fn of the tuner/method contract: the head's loss of each image, shape [B]."""
    device = next(model.parameters()).device
    return model.loss(batch["image"].to(device), batch["label"].to(device), reduction="none")


class PerSampleLoss(nn.Module):
    """Makes the segmentor's loss the `forward` of a module, so DDP can wrap it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model.loss(images, labels, reduction="none")


def lr_factor(schedule: str, steps: int, warmup: int):
    """Multiplier of the base lr at tuning step i: linear warm-up over `warmup` steps, then
    poly (1 - p)^0.9, cosine (1 + cos(pi p)) / 2 or constant, with p the fraction of the rest done."""
    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        progress = (i - warmup) / max(1, steps - warmup)
        if schedule == "poly":
            return max(0.0, 1 - progress) ** 0.9
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0
    return factor


def seeded_generator(*key: int) -> torch.Generator:
    """A torch.Generator seeded by a tuple of ints (numpy's SeedSequence mixes them)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def epoch_indices(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    """This process's item indices for `epoch`: a permutation seeded by (seed, epoch), cut to whole
    global batches; global batch k is perm[kB:(k+1)B] and process r takes every world-th of it."""
    permutation = torch.randperm(n, generator=seeded_generator(seed, epoch))[: (n // batch_size) * batch_size]
    return permutation[rank::world].tolist()


def collate(items: list[dict]) -> dict:
    """The default collate, with a one-line error when images of one batch differ in size."""
    sizes = {tuple(item["image"].shape[1:]) for item in items}
    if len(sizes) > 1:
        raise FisherTuneError(f"training images differ in size ({' vs '.join(map(str, sorted(sizes)[:2]))}, "
                              f"e.g. {items[0]['name']}); set data.crop to train on crops")
    return default_collate(items)


def source_batches(dataset: Dataset, config: Config, start: int) -> Iterator[dict]:
    """Endless stream of this process's training micro-batches, from global micro-batch `start` on."""
    batch_size, world = config.data.batch_size, distributed.world_size()
    per_epoch = len(dataset) // batch_size
    epoch, offset = divmod(start, per_epoch)
    local = batch_size // world
    while True:
        dataset.set_epoch(epoch)
        indices = epoch_indices(len(dataset), batch_size, config.train.seed, epoch, distributed.rank(), world)
        # its own generator: creating a loader draws its workers' base seed, never from the global RNG
        loader = DataLoader(dataset, batch_size=local, sampler=indices[offset * local:], drop_last=True,
                            num_workers=config.data.workers, collate_fn=collate,
                            generator=seeded_generator(config.train.seed, epoch, distributed.rank()))
        yield from loader
        epoch, offset = epoch + 1, 0


def estimation_batches(dataset: Dataset, config: Config) -> list[dict]:
    """The handful of source batches (`train.prepare_batches`) the tuner's prepare and after_step hooks
    estimate from, fixed for the whole run."""
    dataset.set_epoch(PREPARE_EPOCH)
    world, batch_size = distributed.world_size(), config.data.batch_size
    indices = epoch_indices(len(dataset), batch_size, config.train.seed, PREPARE_EPOCH, distributed.rank(),
                            world)
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=indices, drop_last=True,
                        collate_fn=collate, generator=seeded_generator(config.train.seed, PREPARE_EPOCH))
    return [batch for batch, _ in zip(loader, range(config.train.prepare_batches))]


def perturbation_modules(model: nn.Module, layers: list[int | str]) -> list[str]:
    """Module names for `train.perturb.layers`: an int is a backbone block index, a string a module name."""
    out = layer_module_names(model, layers, "train.perturb.layers")
    names = [name for name, _ in model.named_modules()]
    for name in out:
        if name not in names:
            raise FisherTuneError(f"train.perturb.layers: no module named {name!r}"
                                  f"{did_you_mean(name, names)}")
    return out


class Trainer:
    """One training run into `run_dir`; `run()` returns the run's result (as in results.json)."""

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.device = distributed.setup()
        world = distributed.world_size()
        if config.data.batch_size % world:
            raise FisherTuneError(f"data.batch_size {config.data.batch_size} is not divisible by the "
                                  f"{world} processes")
        self.folder = RunFolder(self.run_dir)
        self.lock_folder()
        try:
            self.checkpoint = open_run(self.run_dir, config, resume)
            distributed.barrier()  # every process has checked the run folder before rank 0 writes to it
            self.build()
        except BaseException:
            self.folder.clean_up()
            raise

    def lock_folder(self) -> None:
        """Rank 0 takes the run folder's lock; every process refuses when it could not."""
        refused = None
        if distributed.is_main():
            try:
                self.folder.lock()
            except InputError as error:
                refused = error
        if distributed.any_true(refused is not None, self.device):
            raise refused or InputError(f"{self.run_dir} is in use by another training")

    def build(self) -> None:
        """Datasets, model and tuner of the run."""
        config = self.config
        self.train_set, self.val_sets = build_source_datasets(config)  # data first: refused before the model
        self.target_sets = build_eval_datasets(config.data.targets, run_classes(config))
        seed_everything(config.train.seed)
        self.model, self.tuner = build_model(config)
        self.model.backbone.activation_checkpointing = config.train.activation_checkpointing
        distributed.sync_batch_norm(self.model, self.device)  # under DDP: the global batch's BN statistics
        self.model.to(self.device)
        t = config.train
        self.perturb_modules = perturbation_modules(self.model, t.perturb.layers) if t.perturb.enabled else []
        self.eval_settings = EvalSettings.from_config(config)
        self.total = t.warmup_steps + t.steps
        self.estimation_batches = estimation_batches(self.train_set, config)
        selector = getattr(self.tuner, "selector", None)
        if selector is not None:  # a progress bar for each estimate (a minute or more on a real model)
            selector.show_progress = self.progress and distributed.is_main()
        self.phase: Phase | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.forward: nn.Module | None = None
        self.scaler = grad_scaler(self.device, config.train.amp)
        self._wrapped_for: list[int] = []  # ids of the parameters DDP was built for

    # -- phases --------------------------------------------------------------------------------------
    def phase_at(self, step: int) -> Phase:
        """The phase of run step `step` (counting from 0)."""
        return Phase.WARMUP if step < self.config.train.warmup_steps else Phase.TUNE

    def enter_phase(self, phase: Phase, saved: dict | None = None) -> None:
        """Set what trains and build the optimiser (and scheduler) of `phase`, fresh or from `saved`."""
        t = self.config.train
        self.model.train()
        if phase is Phase.WARMUP:
            for p in self.model.backbone.parameters():
                p.requires_grad_(False)
            for p in self.model.head.parameters():
                p.requires_grad_(True)
            self.optimizer = torch.optim.AdamW(self.model.head.parameters(), lr=t.head_lr,
                                               weight_decay=t.weight_decay)
            self.scheduler = None
        else:
            if saved is None:
                self.tuner.prepare(self.estimation_batches, per_sample_loss)
            else:
                self.tuner.load_state_dict(saved["tuner"])
            self.optimizer = self.tuner.build_optimizer(lr=t.lr, head_lr=t.head_lr,
                                                        weight_decay=t.weight_decay)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lr_factor(t.schedule, t.steps, t.lr_warmup))
        if saved is not None:
            self.optimizer.load_state_dict(saved["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(saved["scheduler"])
        self.phase = phase
        self.wrap()

    def warm_up_head(self) -> None:
        """The head warm-up alone: `train.warmup_steps` steps of the head on the run's batch stream from its
        start, backbone frozen; no log, checkpoint or evaluation (`fishertune fisher` runs this)."""
        batches = source_batches(self.train_set, self.config, start=0)
        self.enter_phase(Phase.WARMUP)
        try:
            for step in range(self.config.train.warmup_steps):
                self.train_step(step, batches)
        finally:
            batches.close()

    def estimate(self) -> MaskSelector:
        """The mask tuner's estimate and selection of δ(0) on the estimation batches, as its prepare does,
        but keeping the curvature, terms and draws for inspection; returns the tuner's `MaskSelector`."""
        selector = getattr(self.tuner, "selector", None)
        if selector is None:
            raise UsageError(f"Trainer.estimate() needs a mask tuner, not {self.config.method.name!r}")
        selector.keep_terms = True
        selector.estimate(self.estimation_batches, per_sample_loss)
        selector.select(step=0)
        return selector

    def _trainable(self) -> list[int]:
        return [id(p) for p in self.model.parameters() if p.requires_grad]

    def wrap(self) -> None:
        """The loss module, under DDP in a distributed run. DDP all-reduces the gradients of the parameters
        that require grad when it is built, so it is rebuilt whenever that set changes (a mask tuner freezes
        the tensors with nothing selected: only tensors with a selection are all-reduced). Every trainable
        parameter receives a gradient, so DDP searches for unused ones only when blocks after the last
        output block (which never run) hold trainable parameters."""
        self._wrapped_for = self._trainable()
        self.forward = PerSampleLoss(self.model)
        if distributed.is_distributed():
            backbone = self.model.backbone
            idle = list(backbone.blocks)[max(backbone.out_indices) + 1:]
            unused = any(p.requires_grad for block in idle for p in block.parameters())
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = nn.parallel.DistributedDataParallel(self.forward, device_ids=ids,
                                                               find_unused_parameters=unused)

    def rewrap_if_changed(self) -> None:
        """Rebuild the DDP wrapper when the tuner changed which parameters train (e.g. mask growth)."""
        if distributed.is_distributed() and self._trainable() != self._wrapped_for:
            self.wrap()

    # -- one optimiser step --------------------------------------------------------------------------
    def train_step(self, step: int, batches: Iterator[dict]) -> float:
        """Run `grad_accum` micro-batches and one optimiser step; return the mean loss."""
        t, device = self.config.train, self.device
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        for micro in range(t.grad_accum):
            batch = next(batches)
            images, labels = batch["image"].to(device), batch["label"].to(device)
            last = micro == t.grad_accum - 1
            sync = self.forward.no_sync() if distributed.is_distributed() and not last else nullcontext()
            with sync:
                with autocast(device, t.amp), self.perturbation(step, micro):
                    loss = self.forward(images, labels).float().mean()
                if distributed.any_true(not torch.isfinite(loss).item(), device):
                    raise TrainingDiverged(f"loss became {loss.item()} at step {step}; training stopped "
                                           f"(lower train.lr or train.head_lr)")
                self.scaler.scale(loss / t.grad_accum).backward()
            losses.append(loss.detach())
        self.scaler.step(self.optimizer)  # optimizer.step(), after unscaling and a finiteness check with fp16
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        mean = torch.stack(losses).mean()
        return float(distributed.all_reduce_sum(mean) / distributed.world_size())

    def perturbation(self, step: int, micro: int):
        """Training-time feature perturbation around the forward (a fresh seeded draw per micro-batch)."""
        if not self.perturb_modules:
            return nullcontext()
        t = self.config.train
        seed = int(np.random.SeedSequence([t.seed, step, micro, distributed.rank()]).generate_state(1)[0])
        return FeaturePerturbation(self.model, self.perturb_modules, alpha=t.perturb.alpha, seed=seed)

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        try:
            return self._run()
        except KeyboardInterrupt as error:
            signum = getattr(error, "signum", signal.SIGINT)
            reason = "interrupted by SIGTERM" if signum == signal.SIGTERM else "interrupted"
            raise RunInterrupted(self.stopped(reason), signum) from None
        except TrainingDiverged as error:
            raise TrainingDiverged(self.stopped(str(error))) from None
        except InputError as error:  # found once training runs (a bad target image): what to do next
            if not self.stepping:
                self.stopped("failed")
                raise
            raise InputError(self.stopped(str(error))) from None
        except OSError as error:
            if error.errno not in DISK_FULL:
                self.stopped("failed")
                raise
            raise InputError(self.stopped(disk_full_message(error, advice=False))) from None
        except BaseException:
            self.stopped("failed")
            raise
        finally:
            self.folder.unlock()

    def stopped(self, reason: str) -> str:
        """After a failure: remove what this run added if it has no checkpoint; return `reason` and what to
        do next."""
        checkpoint = latest_checkpoint(self.run_dir / "checkpoints")
        if checkpoint is None:
            self.folder.clean_up()
            return (f"{reason} before the first checkpoint; the files of this run were removed: run the "
                    f"same command again (without --resume)")
        return (f"{reason}; the last checkpoint ({checkpoint}) is kept: continue with the same `fishertune "
                f"train` command plus --resume, which may change train.lr, train.steps, eval.* and a few "
                f"more (see docs/errors.md)")

    def _run(self) -> RunResult:
        t = self.config.train
        step, seconds = 0, 0.0
        self.stepping = False  # until the checks of a resumed run are done
        if self.checkpoint is not None:  # read (and checked) before the run writes anything
            step, saved = load_checkpoint(self.checkpoint, self.model)
            missing = {"phase", "config", "optimizer", "scheduler", "tuner", "rng", "train_seconds"}
            missing -= set(saved)
            if missing:
                raise InputError(f"checkpoint {self.checkpoint} is damaged: its state lacks "
                                 f"{sorted(missing)}")
            if saved["phase"] not in {phase.value for phase in Phase}:
                raise InputError(f"checkpoint {self.checkpoint} is damaged: unknown phase {saved['phase']!r}")
        if distributed.is_main():  # a resumed run records the settings it continues with (RESUME_OVERRIDES)
            save_config(self.config, self.run_dir / "config.yaml")
        # closed however the run ends: its TensorBoard writer must not outlive a clean-up of the folder
        with RunLogger(self.run_dir, enabled=distributed.is_main()) as logger:
            if self.checkpoint is not None:
                self.enter_phase(Phase(saved["phase"]), saved)
                self.apply_resume_overrides(saved["config"]["train"])
                set_rng_state(saved["rng"])
                seconds = saved["train_seconds"]
                logger.truncate_after(step)
            self.stepping = True
            batches = source_batches(self.train_set, self.config, step * t.grad_accum)
            bar = tqdm(total=self.total, initial=step, desc=f"train {self.config.method.name}",
                       disable=not (self.progress and distributed.is_main()))
            while step < self.total:
                phase = self.phase_at(step)
                start = time.perf_counter()
                if phase != self.phase:
                    self.enter_phase(phase)  # the tuner's prepare (e.g. Fisher estimation) counts as training
                lrs = [group["lr"] for group in self.optimizer.param_groups]  # the lrs of this step
                loss = self.train_step(step, batches)
                if phase is Phase.TUNE:
                    self.tuner.after_step(step - t.warmup_steps, t.steps, self.estimation_batches,
                                          per_sample_loss, self.optimizer)
                    self.rewrap_if_changed()
                seconds += time.perf_counter() - start
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if step % t.log_every == 0 or step == self.total:
                    logger.log(step, phase.value, loss=loss, head_lr=lrs[0], lr=lrs[-1], seconds=seconds)
                if t.eval_every and step % t.eval_every == 0 and self.val_sets and step < self.total:
                    logger.log(step, "val", **self.evaluate_source())
                if (t.checkpoint_every and step % t.checkpoint_every == 0) or step == self.total:
                    self.save(step, seconds)
            bar.close()
            batches.close()  # stops the DataLoader's workers
            source = {"source_miou": None}
            if self.val_sets:
                source = self.evaluate_source()
                logger.log(step, "val", **source)
            targets = evaluate_targets(self.model, self.target_sets, self.eval_settings, self.device,
                                       progress=self.progress, per_image=True)
            result = RunResult(trainable_params=self.tuner.num_trainable(),
                               head_params=sum(p.numel() for p in self.model.head.parameters()),
                               source_miou=source["source_miou"], target_miou=targets["target_miou"],
                               mean_target_miou=targets["mean_target_miou"], train_seconds=seconds,
                               per_class_iou=targets["per_class_iou"])
            if distributed.is_main():
                save_model(self.model, self.run_dir / "model.safetensors")
                self.tuner.save_pretrained(str(self.run_dir / "tuner"))
                save_per_image(self.run_dir / PER_IMAGE_FILE, targets["per_image"])
                write_json(self.run_dir / "results.json", results_json({self.config.method.name: result}))
                self.write_report()
        distributed.barrier()
        return result

    def write_report(self) -> None:
        """The run folder's report.md and curves.png (loss and source_val mIoU per step), from its
        results.json and log.jsonl."""
        # heavy dependencies: the report package loads matplotlib and scipy.stats (about 2 s), needed only
        # here, at the end of a run; importing the trainer (fisher_map, tests, the library) does not pay it
        from fishertune.report.markdown import write_report
        from fishertune.report.plots import training_curves

        name = self.config.method.name
        curves = training_curves(read_log(self.run_dir), self.run_dir / "curves.png",
                                 title=f"{name}: training curves")
        results = json.loads((self.run_dir / "results.json").read_text())
        write_report(self.run_dir, results, {"Training curves": curves}, title=f"Run: {name}",
                     ours=name if name.startswith("fishertune") else None)

    def apply_resume_overrides(self, saved: dict) -> None:
        """Continue with this config's train.lr, head_lr and steps rather than the checkpoint's: every lr
        group is scaled by new/old (group 0 is the head's, the tuner contract; the rest the backbone's),
        and the schedule's lrs are recomputed for the new steps. Unchanged settings give the same lrs."""
        t = self.config.train
        head = t.head_lr / saved["head_lr"] if saved["head_lr"] else 1.0
        tune = t.lr / saved["lr"] if saved["lr"] else 1.0
        groups = self.optimizer.param_groups
        factors = [head if i == 0 else tune for i in range(len(groups))]
        if self.scheduler is None:
            for group, factor in zip(groups, factors):
                group["lr"] *= factor
            return
        self.scheduler.base_lrs = [base * f for base, f in zip(self.scheduler.base_lrs, factors)]
        epoch = self.scheduler.last_epoch
        for group, base, factor_at in zip(groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["initial_lr"], group["lr"] = base, base * factor_at(epoch)

    def evaluate_source(self) -> dict:
        (dataset,) = self.val_sets.values()
        result = evaluate(self.model, dataset, self.eval_settings, self.device)
        self.model.train()
        return {"source_miou": result["miou"]}

    def save(self, step: int, seconds: float) -> None:
        if distributed.is_main():
            state = {"phase": self.phase.value, "config": self.config.to_dict(),
                     "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                     "tuner": self.tuner.state_dict() if self.phase is Phase.TUNE else {},
                     "rng": rng_state(), "train_seconds": seconds}
            save_checkpoint(self.run_dir / "checkpoints", step, self.model, state)
        distributed.barrier()


def train(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> RunResult:
    """Train per `config` into `run_dir` (or continue it with resume=True); return the run's result."""
    return Trainer(config, run_dir, resume, progress).run()
