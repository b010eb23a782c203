"""The body of each `fishertune` command (`run_<command>(args) -> exit status`); heavy imports inside."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fishertune.atomic import check_new_folder, check_writable
from fishertune.cli.signals import result_complete
from fishertune.errors import FisherTuneError, InputError

if TYPE_CHECKING:
    from fishertune.engine.evaluator import Inference
    from fishertune.run_result import RunResult

LIST_KINDS = ("tuners", "backbones", "heads", "datasets")
"""What `fishertune list` lists (`methods` is accepted for `tuners`: a method is a registered tuner)."""


def run_synth(args: argparse.Namespace) -> int:
    from fishertune.benchmark.synthetic import generate
    from fishertune.data.image_io import MAX_PIXELS

    out = check_writable(args.out, folder=True)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise InputError(f"{out} is not empty; pass --overwrite to replace same-named files in it, or choose "
                         f"another --out")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    if args.size * args.size > MAX_PIXELS:  # larger scenes could not be read back
        raise InputError(f"--size {args.size} is too large: a {args.size}x{args.size} scene is over the "
                         f"{MAX_PIXELS / 1e6:g}-megapixel image limit")
    domains = None if args.domains is None else [d.strip() for d in args.domains.split(",") if d.strip()]
    if domains == []:
        raise InputError(f"--domains {args.domains!r} names no domain")
    folders = generate(args.out, domains=domains, n=args.n, size=args.size, seed=args.seed)
    result_complete()
    print(f"wrote {args.n} images per domain for {', '.join(folders)} to {args.out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from fishertune.engine import distributed
    from fishertune.engine.config import load_config, with_absolute_paths
    from fishertune.engine.trainer import train

    config = with_absolute_paths(load_config(args.config, args.overrides))  # the run works from anywhere
    check_writable(args.out, folder=True)
    result = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    result_complete()
    if distributed.is_main():
        print(_summary(config.method.name, result))
        print(f"run written to {args.out}")
    distributed.teardown()
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from fishertune.atomic import write_json
    from fishertune.engine import distributed
    from fishertune.engine.build import build_eval_datasets, load_run, run_classes
    from fishertune.engine.evaluator import EvalSettings, evaluate_targets

    if args.json:
        check_writable(args.json)
        check_replaceable(args.json)
    device = distributed.setup()
    config, model = load_run(args.run, device, backbone=args.backbone)
    set_max_pixels(config.data.max_pixels)
    specs = args.data or config.data.targets
    if not specs:
        raise InputError("nothing to evaluate: give --data SPEC (the run's config has no data.targets)")
    datasets = build_eval_datasets(specs, run_classes(config))
    settings = EvalSettings.from_config(config)
    inference = _inference(args, settings.inference, config.data.max_pixels)
    results = evaluate_targets(model, datasets, dataclasses.replace(settings, inference=inference), device,
                               progress=not args.no_progress)
    if distributed.is_main():
        print(per_class_table(results["per_class_iou"]))
        for name, miou in results["target_miou"].items():
            print(f"{name:>24s}  mIoU {miou:6.2f}")
        print(f"{'mean':>24s}  mIoU {results['mean_target_miou']:6.2f}")
        if args.json:
            write_json(args.json, {"run": str(args.run), "inference": inference.kwargs(), **results})
    result_complete()
    distributed.teardown()
    return 0


def check_replaceable(json_path: str) -> None:
    """`eval --json` may replace only an earlier eval result: never a file of the run folder it reads (its
    model, results.json, config) nor any other file of the user's (e.g. a label of the evaluated data)."""
    path = Path(json_path)
    if not path.exists():
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        earlier = None
    if not (isinstance(earlier, dict) and {"run", "target_miou"} <= set(earlier)):
        raise InputError(f"--json {path} exists and is not an earlier `fishertune eval` result: choose "
                         f"another path (nothing was overwritten)")


def per_class_table(per_class: dict[str, dict[str, float | None]]) -> str:
    """IoU per class (rows) and dataset (columns), in percent, as mmsegmentation prints it after an
    evaluation; "-" for a class absent from both the labels and the predictions."""
    names = list(per_class)
    classes = list(next(iter(per_class.values()))) if per_class else []
    width = max([len(c) for c in classes] + [5])
    columns = [max(len(n), 6) for n in names]
    lines = [f"{'class':<{width}}  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, columns))]
    for c in classes:
        cells = [per_class[n].get(c) for n in names]
        lines.append(f"{c:<{width}}  " + "  ".join(("-" if v is None else f"{v:.2f}").rjust(w)
                                                    for v, w in zip(cells, columns)))
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from fishertune.engine import distributed
    from fishertune.engine.build import load_run, run_classes
    from fishertune.engine.evaluator import Inference
    from fishertune.engine.predictor import check_inputs, predict_images

    check_writable(args.out, folder=True)
    if bool(args.images) == bool(args.data):
        raise InputError("give either image files or --data SPEC")
    images, base = args.images, None
    if args.data:
        from fishertune.data.specs import resolve_spec

        files = resolve_spec(args.data)
        images, base = [pair.image for pair in files.pairs], files.root
        if not images:
            raise InputError(f"no images found for {args.data}")
    set_max_pixels(args.max_pixels)
    check_inputs(images)  # every image decoded, before the model is loaded
    device = distributed.setup()
    config, model = load_run(args.run, device, backbone=args.backbone)
    inference = _inference(args, Inference.from_config(config), args.max_pixels or config.data.max_pixels)
    predict_images(model, images, args.out, inference, device, fmt=args.format, overlay=args.overlay,
                   base=base, classes=run_classes(config), progress=not args.no_progress, inputs_checked=True,
                   overwrite=args.overwrite)
    result_complete()
    count = f"{len(images)} prediction{'s' * (len(images) != 1)}"
    print(f"wrote {count}{' and their overlays' if args.overlay else ''} to {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from fishertune.engine.export import export_run
    from fishertune.engine.hub import check_repo_id, push_to_hub
    from fishertune.engine.onnx_export import check_onnx_output, export_onnx, load_exportable

    if not args.out and not args.onnx:
        raise FisherTuneError("export needs --out DIR (a shareable folder) and/or --onnx FILE")
    if args.push_to_hub and not args.out:
        raise FisherTuneError("--push-to-hub uploads the export folder: give --out DIR too")
    if args.private and not args.push_to_hub:
        raise FisherTuneError("--private applies to --push-to-hub REPO (the Hub repo it creates)")
    if args.push_to_hub:
        check_repo_id(args.push_to_hub)
    if args.out:  # both outputs are checked before either is written
        if args.backbone:
            raise FisherTuneError("--backbone applies to --onnx from an export folder")
        check_new_folder(args.out)
    if args.onnx:  # onnx and onnxruntime importable, a .onnx name, a writable place that is no link,
        check_onnx_output(args.onnx)  # and a model that one graph can serve
        model = load_exportable(args.run, backbone=args.backbone)
    if args.out:
        summary = export_run(args.run, args.out)
        if not args.onnx and not args.push_to_hub:
            result_complete()
        size = sum(summary["files"].values())
        print(f"wrote {args.out}: {size / 1e6:.2f} MB ({100 * size / summary['model_bytes']:.2f}% of the "
              f"full model.safetensors, {summary['model_bytes'] / 1e6:.2f} MB)")
        if args.push_to_hub:  # an upload stays interruptible: the folder is complete either way
            url = push_to_hub(args.out, args.push_to_hub, args.private)
            if not args.onnx:
                result_complete()
            print(f"pushed {args.out} to the Hub: {url}")
    if args.onnx:
        report = export_onnx(args.run, args.onnx, model=model)
        result_complete()
        for shape, diff, agreement in report["checks"]:
            print(f"onnxruntime vs PyTorch, input {shape}: max abs logit difference {diff:.2e}, "
                  f"argmax agreement {100 * agreement:.3f}%")
        print(f"wrote {args.onnx} (any height and width; padded inside the graph to multiples of "
              f"{report['patch_size']})")
    return 0


def run_fisher(args: argparse.Namespace) -> int:
    from fishertune.engine import distributed
    from fishertune.engine.config import load_config
    from fishertune.engine.fisher_map import fisher_map

    config = load_config(args.config, args.overrides)
    check_new_folder(args.out)  # the files are written in a temporary folder renamed to --out
    written = fisher_map(config, args.out, progress=not args.no_progress)
    result_complete()
    if distributed.is_main():
        print("wrote " + ", ".join(str(path) for path in written))
    distributed.teardown()
    return 0


def run_data_check(args: argparse.Namespace) -> int:
    from fishertune.data.check import inspect_dataset, split_counts
    from fishertune.data.classes import CITYSCAPES

    set_max_pixels(args.max_pixels)
    classes = CITYSCAPES
    if args.config:
        from fishertune.engine.build import run_classes
        from fishertune.engine.config import load_config

        classes = run_classes(load_config(args.config))
    report = inspect_dataset(args.spec, histogram=args.histogram, classes=classes)
    counts = split_counts(args.spec)
    if counts:
        shown = (f"{split} {'not found' if n is None else n}" for split, n in counts.items())
        print("splits: " + ", ".join(shown))
    print(f"{report.name}: {report.images} images, {report.labelled} labelled; "
          f"label table: {report.label_table}")
    for line in report.notes:
        print(f"note: {line}")
    for line in report.problems:
        print(line)
    if report.histogram is not None:
        total = max(1, int(report.histogram.sum()))
        print(f"{'train id':>8s}  {'class':<14s} {'pixels':>14s} {'share':>7s}")
        for train_id, name in [*enumerate(classes.names), (255, "ignore")]:
            pixels = int(report.histogram[train_id])
            print(f"{train_id:>8d}  {name:<14s} {pixels:>14,d} {100 * pixels / total:6.2f}%")
    print(report.verdict)
    return 1 if report.problems else 0


def run_demo(args: argparse.Namespace) -> int:
    from fishertune.benchmark.demo import DemoOptions, run_demo

    check_writable(args.out, folder=True)
    methods = [name.strip() for name in args.methods.split(",")] if args.methods else None
    run_demo(DemoOptions(args.out, args.full, args.regime, args.hparams, methods, args.backbone, args.images,
                         args.size, _seeds(args.seeds) if args.seeds else None, args.overrides,
                         not args.no_progress))
    return 0


LIST_HEADINGS = {
    "tuners": "methods (tuners; the config's method.name)",
    "backbones": "backbones (model.backbone)",
    "heads": "heads (model.head)",
    "datasets": "datasets (the <dataset> of a SPEC <dataset>:ROOT[:split[:option]])",
}


def run_list(args: argparse.Namespace) -> int:
    from fishertune.registry import unknown_name

    kind = "tuners" if args.kind == "methods" else args.kind
    if kind is not None and kind not in LIST_KINDS:
        raise unknown_name("kind", args.kind, [*LIST_KINDS, "methods"])
    blocks = []
    for name in [kind] if kind else LIST_KINDS:
        registry = registered(name)
        width = max(map(len, registry), default=0)
        lines = [f"  {entry:<{width}}  {_describe(registry[entry])}".rstrip() for entry in sorted(registry)]
        blocks.append("\n".join([f"{LIST_HEADINGS[name]}:", *lines]))
    print("\n\n".join(blocks))
    return 0


def registered(kind: str):
    """The registry of one `fishertune list` KIND, filled: the packages whose import registers the entries
    are imported first (torch is imported here, not for `fishertune --help`)."""
    if kind == "tuners":
        from fishertune.tuners import TUNERS  # the package imports every tuner module, which registers it

        return TUNERS
    if kind == "backbones":
        from fishertune.models import BACKBONES  # the package registers every family, dinov2_s_offline too

        return BACKBONES
    if kind == "heads":
        from fishertune.models.heads import HEADS  # the package imports every head module

        return HEADS
    from fishertune.data.layouts import DATASETS

    return DATASETS


def _describe(entry) -> str:
    """An entry's one-line description when it carries one (a dataset's `description`, a tuner's `paper`)."""
    for attribute in ("description", "paper"):
        text = getattr(entry, attribute, None)
        if isinstance(text, str) and text.strip():
            return " ".join(text.split())
    return ""


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise InputError(f"--seeds takes comma-separated integers, got {text!r}") from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:  # checked before any training: a seed twice would be one run counted twice
        raise InputError(f"--seeds names seed {repeated[0]} more than once")
    if any(not 0 <= s < 2**32 for s in seeds):
        raise InputError(f"--seeds must be in [0, 2^32), got {text!r}")
    return seeds


def set_max_pixels(max_pixels: int | None) -> None:
    from fishertune.data.image_io import set_max_pixels

    set_max_pixels(max_pixels)


def _inference(args: argparse.Namespace, inference: Inference, max_pixels: int | None = None) -> Inference:
    """`inference` (the run's) with the settings given on the command line (--mode, --crop, --stride); a
    window over the image size limit, or a window size for whole-image inference, is refused."""
    from fishertune.engine.config import check_crop

    check_crop(args.crop, "--crop", max_pixels)
    given = {key: getattr(args, key) for key in ("mode", "crop", "stride") if getattr(args, key) is not None}
    inference = dataclasses.replace(inference, **given)
    if inference.mode == "whole" and ({"crop", "stride"} & set(given)):
        raise InputError("--crop and --stride size the sliding windows: add --mode slide (this run infers on "
                         "whole images)")
    return inference


def _summary(method: str, result: RunResult) -> str:
    def fmt(value):
        return "n/a" if value is None else f"{value:.2f}"

    targets = ", ".join(f"{name} {fmt(v)}" for name, v in result.target_miou.items())
    return (f"{method}: trainable {result.trainable_params:,} | source mIoU {fmt(result.source_miou)} | "
            f"targets: {targets or 'none'} | mean target mIoU {fmt(result.mean_target_miou)} | "
            f"{result.train_seconds:.1f} s")
