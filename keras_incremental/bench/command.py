"""The benchmark's command line: runs methods, prints a table, writes JSON."""

import argparse
import resource
import sys

import numpy as np

from keras_incremental import metrics
from keras_incremental import strategies
from keras_incremental.bench import data
from keras_incremental.bench import protocol

METHODS = tuple(sorted(strategies.NAMED)) + protocol.REFERENCES


def parser(prog="python -m keras_incremental.bench"):
    """The argument parser of the `bench` command."""
    result = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Class-incremental benchmark (DESIGN.md section 5): five stages "
            "of two classes, an MLP 256-256, Adam 1e-3, batch 32; accuracy "
            "on all classes seen after every stage."
        ),
    )
    result.add_argument(
        "--dataset",
        choices=data.DATASETS,
        default="digits",
        help="Data set (default: digits).",
    )
    result.add_argument(
        "--strategy",
        nargs="+",
        default=["default"],
        metavar="NAME",
        help=(
            "Methods to run: strategy names, the references 'rebuild' and "
            "'joint', or 'all'. The first is the one the JSON's top-level "
            f"metrics describe. Choices: {', '.join(METHODS)}. "
            "Default: default."
        ),
    )
    result.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2],
        help="Seeds; metrics are their mean (default: 0 1 2).",
    )
    result.add_argument(
        "--order",
        nargs="+",
        type=int,
        default=list(range(10)),
        help="Class order; consecutive pairs make the stages (default 0..9).",
    )
    result.add_argument(
        "--memory-size",
        type=int,
        default=200,
        help="Exemplar budget (default: 200).",
    )
    result.add_argument(
        "--epochs", type=int, default=5, help="Epochs per stage (default 5)."
    )
    result.add_argument("--json", metavar="PATH", help="Write results here.")
    return result


def check_arguments(arguments, error):
    """Checks what argparse cannot; calls `error(message)` when wrong."""
    names = []
    for name in arguments.strategy:
        expanded = list(METHODS) if name == "all" else [name]
        for method in expanded:
            if method not in METHODS:
                error(
                    f"unknown method {method!r}; expected one of "
                    f"{', '.join(METHODS)} or 'all'"
                )
            if method not in names:
                names.append(method)
    arguments.strategy = names
    if sorted(arguments.order) != list(range(10)):
        error(
            "--order must be a permutation of the classes 0..9; "
            f"received {arguments.order}"
        )
    if arguments.memory_size < 0:
        error(f"--memory-size must be >= 0; received {arguments.memory_size}")
    if arguments.epochs < 1:
        error(f"--epochs must be >= 1; received {arguments.epochs}")
    return arguments


def run(arguments, out=sys.stdout):
    """Runs every method on every seed; returns the JSON-able results."""
    dataset = data.load(arguments.dataset)
    methods = {}
    for method in arguments.strategy:
        runs = []
        for seed in arguments.seeds:
            result = protocol.run(
                method,
                dataset,
                order=arguments.order,
                seed=seed,
                memory_size=arguments.memory_size,
                epochs=arguments.epochs,
            )
            runs.append(result)
            print(
                f"  {method:<10} seed {seed}: final "
                f"{100 * result['final_accuracy']:5.1f}%  "
                f"{result['seconds']:5.1f} s",
                file=out,
                flush=True,
            )
        methods[method] = _mean_of(runs)
    main_method = arguments.strategy[0]
    report = {
        **methods[main_method],
        "method": main_method,
        "methods": methods,
        "peak_rss_mb": _peak_rss_mb(),
        "arguments": {
            "dataset": arguments.dataset,
            "strategy": arguments.strategy,
            "seeds": arguments.seeds,
            "order": arguments.order,
            "memory_size": arguments.memory_size,
            "epochs": arguments.epochs,
        },
    }
    if "rebuild" in methods and main_method != "rebuild":
        report["seconds_vs_rebuild"] = (
            methods[main_method]["seconds"] / methods["rebuild"]["seconds"]
        )
    return report


def _mean_of(runs):
    """Mean metrics over seeds; the per-seed runs kept under `runs`."""
    keys = (
        "final_accuracy",
        "average_incremental_accuracy",
        "forgetting",
        "backward_transfer",
        "seconds",
    )
    mean = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    mean["final_accuracy_std"] = float(
        np.std([r["final_accuracy"] for r in runs])
    )
    matrices = np.asarray(
        [
            [
                [np.nan if v is None else v for v in row]
                for row in r["accuracy_matrix"]
            ]
            for r in runs
        ],
        dtype="float64",
    )
    mean["accuracy_matrix"] = metrics.summarize(np.mean(matrices, axis=0))[
        "accuracy_matrix"
    ]
    mean["runs"] = runs
    return mean


def table(report):
    """The results as a Markdown table (accuracies in %)."""
    lines = [
        "| method | final acc. | avg. incr. acc. | forgetting | BWT "
        "| seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in report["methods"].items():
        lines.append(
            f"| {name} | {100 * m['final_accuracy']:.1f} "
            f"± {100 * m['final_accuracy_std']:.1f} "
            f"| {100 * m['average_incremental_accuracy']:.1f} "
            f"| {100 * m['forgetting']:.1f} "
            f"| {100 * m['backward_transfer']:.1f} "
            f"| {m['seconds']:.1f} |"
        )
    return "\n".join(lines)


def _peak_rss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def main(argv=None, prog="python -m keras_incremental.bench"):
    """Entry point of `python -m keras_incremental.bench`."""
    argument_parser = parser(prog)
    arguments = check_arguments(
        argument_parser.parse_args(argv), argument_parser.error
    )
    print(
        f"keras_incremental bench: {arguments.dataset}, "
        f"{len(arguments.seeds)} seed(s), {arguments.epochs} epochs per "
        f"stage, memory {arguments.memory_size}",
        flush=True,
    )
    report = run(arguments)
    print(table(report))
    if "seconds_vs_rebuild" in report:
        print(
            f"{report['method']} took {report['seconds_vs_rebuild']:.2f}x "
            "the time of 'rebuild'."
        )
    print(f"peak RSS: {report['peak_rss_mb']:.0f} MB")
    if arguments.json:
        metrics.write_report(report, arguments.json)
        print(f"wrote {arguments.json}")
    return 0
