"""A/B of two xpcnn source trees (say, before and after a change), each run in its own fresh process.

    python bench/ab_trees.py --a /work/main numpy-first --b /work/baseline xpcnn-first --models lenet5 mnist-cnn

Alternates the two trees' runs (which goes first alternates by round), with the children, warm-up,
timing and load check of ``bench/processes.py``; prints each tree's median images/s and the ratio a/b.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import processes  # noqa: E402  (bench/processes.py: the child process and its load check)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", nargs=2, metavar=("TREE", "ORDER"), required=True, help="source tree and import order")
    p.add_argument("--b", nargs=2, metavar=("TREE", "ORDER"), required=True)
    p.add_argument("--models", nargs="+", default=processes.PRESETS)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    for tree, order in (args.a, args.b):
        if order not in processes.ORDERS:
            p.error(f"order must be one of {', '.join(processes.ORDERS)}, got {order!r}")
    rates: dict[tuple[str, str], list[float]] = {}
    for rnd in range(args.rounds):
        for model in args.models:
            jobs = [("a", *args.a), ("b", *args.b)][:: 1 if rnd % 2 == 0 else -1]
            for label, tree, order in jobs:
                cfg = {"engine": "xpcnn", "order": order, "model": model, "batch": args.batch_size, "round": rnd,
                       "path": str(Path(tree).resolve()), "warmup": 1.5, "seconds": args.seconds}
                rates.setdefault((model, label), []).append(processes.run_child(cfg, 0.25, 3)[-1]["img_s"])
    for model in args.models:
        a, b = (statistics.median(rates[(model, k)]) for k in "ab")
        print(f"{model} batch {args.batch_size}: a {a:,.0f} img/s {sorted(round(v) for v in rates[(model, 'a')])} | "
              f"b {b:,.0f} img/s {sorted(round(v) for v in rates[(model, 'b')])} | a/b {a / b:.3f}")


if __name__ == "__main__":
    main()
