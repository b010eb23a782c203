"""How much of each weight matrix a final selection reaches: the share of rows and of columns that hold at
least one selected entry, read from a demo's committed records (trains nothing).

A weight gradient restricted to the rows (or columns) that hold a selected entry costs that share of the
dense one, so these shares bound what a row- or column-restricted backward could save at element
granularity (docs/performance.md). Only the 2-D weights of the selection count (biases and norms are not
matrices).

    python benchmarks/mask_reach.py benchmarks/results/ablation_2026-12-06 --variants fishertune random-select
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fishertune.atomic import read_json
from fishertune.benchmark.records import current_option_names, read_record


def reach(masks: dict) -> tuple[float, float, float]:
    """(rows reached, columns reached, density) over the 2-D masks, each pooled over the matrices."""
    matrices = [m for m in masks.values() if m.ndim == 2]
    rows = sum(int(m.any(1).sum()) for m in matrices) / sum(m.shape[0] for m in matrices)
    cols = sum(int(m.any(0).sum()) for m in matrices) / sum(m.shape[1] for m in matrices)
    density = sum(int(m.sum()) for m in matrices) / sum(m.size for m in matrices)
    return rows, cols, density


def final_masks(out: Path, variant: str, seed: int) -> dict:
    """The final selection of a committed seed run, {tensor: bool array}; {} when it has none."""
    path = out / "records" / variant / f"seed{seed}.json"
    config = current_option_names(read_json(path, "demo record")["config"])  # as the demo asks for it
    record = read_record(out, variant, f"seed{seed}", config)
    return record.masks() if record is not None else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a demo's output folder (holding records/)")
    parser.add_argument("--variants", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()
    print(f"{args.out}: 2-D weights of the final selection, share of rows / columns with a selected entry")
    for variant in args.variants:
        for seed in args.seeds:
            masks = final_masks(args.out, variant, seed)
            if not masks:
                print(f"{variant:>16} seed {seed}: no selection in its record")
                continue
            rows, cols, density = reach(masks)
            print(f"{variant:>16} seed {seed}: rows {rows:.3f}  columns {cols:.3f}  (density {density:.3f})")


if __name__ == "__main__":
    main()
