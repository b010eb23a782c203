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
import itertools

from fishertune.atomic import read_json
from fishertune.report.results import MEAN_TARGET, methods_of, values_by_seed
from fishertune.report.stats import holm, paired_test, summarize_values


def pairs(results: dict, names: list[str]) -> list[dict]:
    """Every pair of `names`, the higher variant first, most significant first: the difference per
    seed, its raw and Holm-adjusted p and the selections' Jaccard overlap (None without selections)."""
    methods = methods_of(results)
    selections = results.get("selections", {}).get("variants", {})
    rows = []
    for a, b in itertools.combinations(names, 2):
        mine, theirs = values_by_seed(methods[a], MEAN_TARGET), values_by_seed(methods[b], MEAN_TARGET)
        diffs = [mine[s] - theirs[s] for s in mine if s in theirs]
        if sum(diffs) < 0:
            a, b, diffs = b, a, [-d for d in diffs]
        rows.append({"a": a, "b": b, "differences": diffs, "p": paired_test(diffs),
                     "jaccard": selections.get(a, {}).get("overlap", {}).get(b)})
    for row, adjusted in zip(rows, holm([row["p"] for row in rows])):
        row["p_holm"] = adjusted
    return sorted(rows, key=lambda row: row["p"])


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
    for row in rows:
        diffs = row["differences"]
        summary, wins = summarize_values(diffs), sum(d > 0 for d in diffs)
        jaccard = "–" if row["jaccard"] is None else f"{row['jaccard']:.1%}"
        print(f"| {row['a']} | {row['b']} | {summary.mean:+.2f} ± {summary.std:.2f} | {wins}/{len(diffs)} | "
              f"{row['p']:.2g} | {row['p_holm']:.2g} | {jaccard} |")

if __name__ == "__main__":
    main()
