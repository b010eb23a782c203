"""Every pairwise difference among an ablation's variants, Holm-adjusted over all the pairs.

The demo report compares FisherTune with each other variant (one family per column). An ablation asks
more: which selection rule beats which. For the chosen variants (default: the mask variants, those with
a selection in results.json) this prints, for every pair A, B, the mean target mIoU difference A − B
paired by seed (mean ± std, and in how many seeds A is higher), the two-sided paired t-test p, that p
Holm-adjusted over all the pairs printed (one family), and the Jaccard overlap of A's and B's final
selections. Several results.json of the same recipe (a comparison and a folder of variants added to it)
are read side by side; overlaps exist only within one file. Reads results only; trains nothing.

    python benchmarks/ablation_pairs.py benchmarks/results/demo_full_2026-11-30/results.json
    python benchmarks/ablation_pairs.py DIR/results.json DIR/added/results.json --variants a b c
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

from fishertune.atomic import read_json
from fishertune.report.results import MEAN_TARGET, methods_of
from fishertune.report.stats import PairedDifference, holm, paired_difference


def pairs(results: dict, names: list[str]) -> list[tuple[PairedDifference, float | None]]:
    """Every pair of `names` on mean target mIoU, the higher variant as `ours`, most significant first, its
    p Holm-adjusted over all the pairs (`p_holm`), with the selections' Jaccard overlap (None without
    selections)."""
    methods = methods_of(results)
    selections = results.get("selections", {}).get("variants", {})
    diffs = []
    for a, b in itertools.combinations(names, 2):
        diff = paired_difference(methods, a, b, MEAN_TARGET)
        if diff is None:
            raise SystemExit(f"error: {a} and {b} share no seed")
        diffs.append(diff if diff.mean >= 0 else paired_difference(methods, b, a, MEAN_TARGET))
    adjusted = holm([d.p_value for d in diffs])
    diffs = [dataclasses.replace(d, p_holm=p) for d, p in zip(diffs, adjusted)]
    return [(d, selections.get(d.ours, {}).get("overlap", {}).get(d.baseline))
            for d in sorted(diffs, key=lambda d: d.p_value)]


def merged(paths: list[str]) -> dict:
    """The methods and selections of several results.json side by side (a variant may repeat only with the
    same results, e.g. a reference variant whose records were copied)."""
    out: dict = {"methods": {}, "selections": {"variants": {}}}
    for path in paths:
        results = read_json(path, "results")
        for name, entry in results["methods"].items():
            if out["methods"].get(name, entry) != entry:
                raise SystemExit(f"error: variant {name!r} differs between the results files")
            out["methods"][name] = entry
        out["selections"]["variants"].update(results.get("selections", {}).get("variants", {}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files with several seeds per variant")
    parser.add_argument("--variants", nargs="+", help="default: the variants with a selection")
    args = parser.parse_args()
    results = merged(args.results)
    rows = pairs(results, args.variants or list(results.get("selections", {}).get("variants", {})))
    print(f"mean target mIoU, A − B paired by seed; Holm over the {len(rows)} pairs\n")
    print("| A | B | A − B | A higher in | p | Holm p | Jaccard |\n|---|---|---:|---:|---:|---:|---:|")
    for diff, overlap in rows:
        jaccard = "–" if overlap is None else f"{overlap:.1%}"
        print(f"| {diff.ours} | {diff.baseline} | {diff.mean:+.2f} ± {diff.std:.2f} | {diff.wins}/{diff.n} | "
              f"{diff.p_value:.2g} | {diff.p_holm:.2g} | {jaccard} |")


if __name__ == "__main__":
    main()
