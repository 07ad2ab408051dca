"""Plots the accuracy per stage of every method from `bench --json` files.

    python benchmarks/plot_results.py benchmarks/digits.json \
        benchmarks/mnist5k.json --out docs/images

writes one PNG per data set (for the docs' benchmark page).
"""

import argparse
import json
import os

import numpy as np

from keras_incremental import metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", help="bench --json files")
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args(argv)
    for path in args.reports:
        with open(path) as file:
            report = json.load(file)
        curves = {}
        for name, method in report["methods"].items():
            stages = [run["stage_accuracy"] for run in method["runs"]]
            curves[name] = list(np.mean(stages, axis=0))
        dataset = report["arguments"]["dataset"]
        seeds = len(report["arguments"]["seeds"])
        target = os.path.join(args.out, f"bench_{dataset}.png")
        metrics.plot_accuracy(
            curves,
            target,
            title=f"{dataset}: accuracy on all classes seen "
            f"(mean of {seeds} seeds)",
        )
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
