"""The `fishertune` command line.

Commands import torch and the models lazily, so `fishertune --help` answers at once. `main` is the one
place where errors become messages and exit statuses (docs/errors.md):

    0    success
    1    `data check` found bad files
    2    bad input, config or environment: one line `error: ...` on stderr, no traceback
    70   a bug in FisherTune: the traceback and a line asking to report it
    130  interrupted by Ctrl-C (143: by SIGTERM), with a line saying what was kept and how to continue
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import traceback
import warnings
from pathlib import Path

from fishertune.benchmark.regime import REGIMES
from fishertune.cli import commands
from fishertune.cli.commands import LIST_KINDS
from fishertune.cli.signals import completion, late_signal_note, result_complete, signals_as_interrupts
from fishertune.errors import (
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_PROBLEMS_FOUND,
    FisherTuneError,
    RunInterrupted,
    UsageError,
)

MAX_PIXELS_HELP = ("refuse images larger than N pixels (width x height) before decoding them "
                   "(default 50 million)")

EXAMPLES = """examples:
  fishertune synth --out data/synth --n 64 --size 64
  fishertune train configs/my_run.yaml --set train.steps=200 --out runs/fishertune
  fishertune eval runs/fishertune --data folder:data/synth/fog --json runs/fishertune/eval.json
  fishertune predict runs/fishertune street.jpg --out predictions
  fishertune predict runs/fishertune --data cityscapes:data/cityscapes:test --format labelid --out submit
  fishertune export runs/fishertune --out exports/fishertune --onnx exports/fishertune.onnx
  fishertune fisher configs/my_run.yaml --out runs/fisher_map
  fishertune data check folder:data/synth/source
  fishertune list tuners
"""


def _synth_domains() -> str:
    from fishertune.benchmark.synthetic import DOMAINS

    return "; ".join(f"{name} ({domain.description})" for name, domain in DOMAINS.items())


BACKBONE_HELP = ("where an export's base backbone weights are now (a file, folder or Hub id), when they "
                 "moved since the export")
PACKAGE = Path(__file__).resolve().parent.parent
DEFAULT_SHOW_WARNING = warnings.showwarning
SET_HELP = "override a config value, e.g. --set train.lr=2e-5 (repeatable)"


def output_path(text: str) -> str:
    """A path to write: not empty (that would be the current folder), and UTF-8, which the files written
    inside (TensorBoard's events, a model card) need to name it."""
    if not text:
        raise argparse.ArgumentTypeError("is empty: give a path")
    try:
        os.fsencode(text).decode("utf-8")
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid UTF-8: choose a path of readable "
                                         f"characters") from None
    return text


def positive_int(text: str) -> int:
    """A whole number >= 1 (0 is refused, never read as "not given")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# -- flags that several commands share: each is defined here once --------------------------------------------

def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """--mode, --crop, --stride: the sliding-window inference settings, overriding the run's `eval` section
    (None when not given; commands.py's `_inference_overrides` reads them)."""
    parser.add_argument("--mode", choices=["whole", "slide"], help="inference mode (default: the run's)")
    parser.add_argument("--crop", type=positive_int, help="sliding-window size")
    parser.add_argument("--stride", type=positive_int, help="sliding-window stride")


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    """--no-progress (args.no_progress)."""
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_set_arg(parser: argparse.ArgumentParser, help: str = SET_HELP) -> None:
    """--set KEY=VALUE, repeatable (args.overrides, a list); `help` for a command where it means more."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=help)


def add_max_pixels_arg(parser: argparse.ArgumentParser) -> None:
    """--max-pixels N (args.max_pixels; None: the default limit)."""
    parser.add_argument("--max-pixels", type=int, metavar="N", help=MAX_PIXELS_HELP)


def add_run_arg(parser: argparse.ArgumentParser) -> None:
    """The RUN positional of the commands that load a trained model (args.run)."""
    parser.add_argument("run", metavar="RUN", help="run folder written by `fishertune train`, or an export")


def add_backbone_weights_arg(parser: argparse.ArgumentParser) -> None:
    """--backbone WEIGHTS of the commands that load a run or an export (args.backbone)."""
    parser.add_argument("--backbone", metavar="WEIGHTS", help=BACKBONE_HELP)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fishertune", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="FisherTune: Fisher-guided robust fine-tuning of vision foundation models for "
                    "domain-generalised semantic segmentation.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    domains = _synth_domains() if argv[:1] == ["synth"] else "see `fishertune synth --help`"  # lazy import
    synth = commands.add_parser(
        "synth", help="write synthetic multi-domain street scenes (DIR/<domain>/images, labels)",
        description=f"Write synthetic street scenes with Cityscapes train-id labels to "
                    f"DIR/<domain>/images/<id>.png and DIR/<domain>/labels/<id>.png. Domains: {domains}.")
    synth.add_argument("--out", required=True, type=output_path, metavar="DIR", help="output folder")
    synth.add_argument("--n", type=positive_int, default=32, help="images per domain (default 32)")
    synth.add_argument("--size", type=positive_int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--domains", default=None, metavar="A,B", help="comma-separated domains (default all)")
    synth.add_argument("--overwrite", action="store_true",
                       help="write into a non-empty DIR, replacing same-named files (refused otherwise)")

    train = commands.add_parser(
        "train", help="train from a YAML config into a run folder",
        description="Train a segmenter from CONFIG (YAML; `base:` files compose protocol x method x "
                    "backbone). Writes RUN/config.yaml (resolved), checkpoints/, log.jsonl, "
                    "model.safetensors, tuner/ and results.json. "
                    "Multi-GPU: torchrun --nproc_per_node N -m fishertune.cli train ...")
    train.add_argument("config", metavar="CONFIG", nargs="+",
                       help="YAML file (or a shipped config, e.g. methods/fishertune.yaml); several are "
                            "merged in order, e.g. protocols/gtav_to_cityscapes_bdd_mapillary.yaml "
                            "backbones/dinov2_l.yaml methods/fishertune.yaml")
    add_set_arg(train)
    train.add_argument("--out", required=True, type=output_path, metavar="RUN", help="run folder to create")
    train.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    add_progress_arg(train)

    evaluate = commands.add_parser(
        "eval", help="mIoU of a trained run on datasets",
        description="Evaluate RUN's final model on each SPEC (folder:PATH or <dataset>:ROOT[:split]) and "
                    "print mIoU per dataset and their mean.")
    add_run_arg(evaluate)
    evaluate.add_argument("--data", action="append", default=[], metavar="SPEC",
                          help="dataset to evaluate (repeatable; default: the run's data.targets)")
    evaluate.add_argument("--json", type=output_path, metavar="OUT",
                          help="write target_miou, mean_target_miou and per-class IoU here")
    add_inference_args(evaluate)
    add_progress_arg(evaluate)
    add_backbone_weights_arg(evaluate)

    fisher = commands.add_parser(
        "fisher", help="DR-FIM scores, heatmap and selection table of a config's model",
        description="Warm up the head as CONFIG says, estimate the DR-FIM of the backbone on source "
                    "batches, and write DIR/scores.safetensors, DIR/heatmap.png (blocks x module types), "
                    "DIR/selection.png and DIR/selection.csv / .md (selected entries per block and type).")
    fisher.add_argument("config", metavar="CONFIG", help="YAML file (method options set the estimate)")
    add_set_arg(fisher, help="override a config value (repeatable)")
    fisher.add_argument("--out", required=True, type=output_path, metavar="DIR", help="output folder")
    add_progress_arg(fisher)

    predict = commands.add_parser(
        "predict", help="masks for images or a dataset (colours, or benchmark submission files)",
        description="Segment IMAGES (or every image of --data SPEC) with RUN's model and write one PNG per "
                    "input under DIR, mirroring the inputs' folders (relative to the dataset root for "
                    "--data), named after the input: Cityscapes colours (color), train ids (trainid, e.g. "
                    "for ACDC's server) or Cityscapes label ids (labelid, for the Cityscapes server). "
                    "Every input is checked before anything is written.")
    add_run_arg(predict)
    predict.add_argument("images", nargs="*", metavar="IMAGES", help="image files")
    predict.add_argument("--data", metavar="SPEC", help="predict every image of a dataset, e.g. "
                                                         "acdc:ROOT:test or cityscapes:ROOT:test")
    predict.add_argument("--out", required=True, type=output_path, metavar="DIR", help="output folder")
    predict.add_argument("--format", choices=["color", "trainid", "labelid"], default="color",
                         help="what each PNG holds (default color)")
    predict.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png (image and "
                                                                  "colours blended half and half)")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace output files that exist (an earlier predict's); refused otherwise")
    add_inference_args(predict)
    add_max_pixels_arg(predict)
    add_progress_arg(predict)
    add_backbone_weights_arg(predict)

    export = commands.add_parser(
        "export", help="a run as a small shareable folder and/or an ONNX graph",
        description="--out DIR writes a folder: config.yaml naming the base backbone, the "
                    "head, only what the method changed (sparse delta or adapter weights), export.json and a "
                    "README.md model card; load it with fishertune.load_pretrained(DIR) or use it as RUN in "
                    "eval/predict/export. --onnx FILE writes the model (LoRA merged) as ONNX with dynamic "
                    "height and width (any size: padded inside the graph), checked against PyTorch with "
                    "onnxruntime. See docs/export.md.")
    export.add_argument("run", metavar="RUN", help="run folder written by `fishertune train`, or an export")
    export.add_argument("--out", type=output_path, metavar="DIR", help="export folder to create")
    export.add_argument("--onnx", type=output_path, metavar="FILE", help="ONNX file to write")
    export.add_argument("--push-to-hub", metavar="REPO",
                        help="upload the --out folder to this Hugging Face Hub model repo (created if "
                             "needed; huggingface_hub's login or HF_TOKEN)")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    export.add_argument("--backbone", metavar="WEIGHTS",
                        help="where the base backbone is, when RUN is an export whose base file moved")

    data = commands.add_parser("data", help="dataset tools", description="Dataset tools.")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    check = data_commands.add_parser(
        "check", help="list every bad file of a dataset",
        description="Read every image/label pair of SPEC and name each bad file (unreadable, wrong size, "
                    "label values outside 0-18 and 255, missing pair). Prints the image count of each split, "
                    "the label table used, notes on handled oddities (GTAV images resized to their label, "
                    "BDD100K images without a mask skipped) and a one-line verdict. Exit status 1 when any "
                    "bad file is found.")
    check.add_argument("spec", metavar="SPEC", help="folder:PATH or <dataset>:ROOT[:split[:option]]")
    check.add_argument("--histogram", action="store_true", help="also print the train-id pixel histogram")
    check.add_argument("--config", metavar="CONFIG", help="check labels against CONFIG's data.classes (a "
                                                         "run's config.yaml works) instead of the 19 classes")
    add_max_pixels_arg(check)

    demo = commands.add_parser(
        "demo", help="the embedded DGSS benchmark: train, evaluate, report",
        description="Generate synthetic domains, fine-tune with FisherTune and the baselines, evaluate "
                    "every target domain, and write DIR/results.json, DIR/report.md and one run per "
                    "method.")
    demo.add_argument("--out", required=True, type=output_path, metavar="DIR", help="output folder")
    demo.add_argument("--full", action="store_true",
                      help="the multi-seed comparison (about 2.5 hours on 2 cores)")
    demo.add_argument("--regime", choices=REGIMES, default="demo",
                      help="converged: issue 23's pilot (frozen, full fine-tuning, a random mask; seeds 1-2) "
                           "with the multi-level head, 640 source images and 1,200 tuning steps, with "
                           "source_val curves, the plateau check and the rule's decision (docs/benchmark.md; "
                           "about 9 hours on 2 cores)")
    demo.add_argument("--hparams", metavar="FILE", type=Path,
                      help="learning rates from FILE (an earlier run's DIR/hparams.yaml) instead of the "
                           "sweep on source_val (quick mode: instead of configs/demo/hparams.yaml)")
    demo.add_argument("--methods", metavar="A,B", help="comma-separated variants of the plan to run "
                      "(default: the mode's list)")
    demo.add_argument("--backbone", metavar="CONFIG",
                      help="backbone config every run uses (default: the offline DINOv2-S)")
    demo.add_argument("--images", type=positive_int, metavar="N",
                      help="images per domain (default: the plan's)")
    demo.add_argument("--size", type=positive_int, metavar="S",
                      help="image side in pixels (default: the plan's)")
    demo.add_argument("--seeds", metavar="A,B", help="comma-separated seeds (default: the mode's)")
    add_set_arg(demo, help="config override applied to every run, e.g. --set train.steps=50")
    add_progress_arg(demo)

    listing = commands.add_parser(
        "list", help="registered names: tuners (methods), backbones, heads, datasets",
        description="Print the names registered for each KIND, one per line under a heading (with a "
                    "one-line description where the entry has one): tuners, the names the config's "
                    "method.name accepts (`methods` is accepted for `tuners`); backbones (model.backbone); "
                    "heads (model.head); datasets (the <dataset> of a SPEC <dataset>:ROOT[:split[:option]]).")
    listing.add_argument("kind", nargs="?", metavar="KIND",
                         help=f"{', '.join(LIST_KINDS[:-1])} or {LIST_KINDS[-1]} (default: all four)")
    return parser


def one_line(error: Exception) -> str:
    """The message of `error`; for an error re-raised from a DataLoader worker (whose message holds the
    worker's traceback) the original message, which is the traceback's last line."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(error).__name__
    return lines[-1].split(f"{type(error).__name__}: ", 1)[-1]


def translate(error: BaseException) -> str | None:
    """One line for an error of a library or the OS that bad input or the environment causes (a file that
    cannot be read or written, a corrupt weights or JSON file, an image too large to decode, memory);
    None for anything else, which is a bug."""
    from fishertune.atomic import DISK_FULL, disk_full_message

    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return disk_full_message(error)
    if isinstance(error, OSError) and (error.filename is not None or error.strerror):
        target = f" {error.filename}" if error.filename is not None else ""
        return f"cannot access{target}: {error.strerror or error}"
    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON (line {error.lineno}, column {error.colno}): {error.msg}"
    if isinstance(error, UnicodeDecodeError):
        return f"a text file is not UTF-8 ({error.reason} at byte {error.start})"
    names = {cls.__name__ for cls in type(error).__mro__}
    if "SafetensorError" in names:
        return f"invalid safetensors file: {one_line(error)}"
    if "DecompressionBombError" in names:
        return f"image too large to decode safely: {one_line(error)}"
    if isinstance(error, MemoryError) or "OutOfMemoryError" in names or allocation_failed(error):
        asked = re.search(r"tried to allocate (\d+) bytes", str(error))
        size = int(asked[1]) if asked else 0
        what = (f"tried to allocate {size / 1e9:.3g} GB" if size >= 1e9 else
                f"tried to allocate {size / 1e6:.3g} MB") if asked else one_line(error)
        return f"out of memory ({what}); lower data.batch_size, data.crop or eval.batch_size"
    return None


ALLOCATOR_FAILURES = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory",
                      "CUDA out of memory", "CUDA error: out of memory", "MPS backend out of memory")
"""How torch's allocators report a failed allocation in a RuntimeError (not always torch.OutOfMemoryError)."""


def allocation_failed(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and any(text in str(error) for text in ALLOCATOR_FAILURES)


def main(argv: list[str] | None = None) -> int:
    program = argv is None  # the `fishertune` program (or python -m fishertune.cli), not a call from Python
    argv = sys.argv[1:] if argv is None else list(argv)
    if program:
        warnings.showwarning = _show_warning
    args = build_parser(argv).parse_args(argv)
    command = args.command if args.command != "data" else f"data_{args.data_command}"
    with signals_as_interrupts(program):
        status = _run(getattr(commands, f"run_{command}"), args)
        completion.status = status
        if completion.late_signal is not None and status in (0, EXIT_PROBLEMS_FOUND):
            print(late_signal_note(completion.late_signal), file=sys.stderr)
    return status


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The program's warnings: FisherTune's own renames (FutureWarning) as one line, `warning: ...`, with
    no source line; others as Python shows them."""
    if issubclass(category, FutureWarning) and Path(filename).resolve().is_relative_to(PACKAGE):
        print(f"warning: {message}", file=sys.stderr if file is None else file)
    else:
        DEFAULT_SHOW_WARNING(message, category, filename, lineno, file, line)


def _run(run, args: argparse.Namespace) -> int:
    """The command's exit status; every error becomes one line (or, for a bug, a traceback)."""
    try:
        return run(args) or 0
    except RunInterrupted as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # the reader of stdout left (`fishertune list | head`): stop quietly, as
        devnull = os.open(os.devnull, os.O_WRONLY)  # shell tools do; stdout now goes nowhere, so that
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit does not fail again
        return 128 + signal.SIGPIPE
    except UsageError:
        return _bug()
    except FisherTuneError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:
        message = translate(error)
        if message is None:
            return _bug()
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:  # the command ended, its message printed: a signal now can only be recorded
        result_complete()


def _bug() -> int:
    traceback.print_exc()
    print("error: this is a bug in FisherTune, not a problem with your input; please report it to the "
          "FisherTune issue tracker with the command you ran and the traceback above", file=sys.stderr)
    return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
