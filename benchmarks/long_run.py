"""Long runs: time and memory per stage over many stages, and one huge stage.

Two scenarios on a small model (MLP input-64-classes, Adam, sparse
cross-entropy on logits) trained with `IncrementalModel(strategy="default",
memory_size=..., checkpoint=...)`, in one process:

- A: `--stages` stages (200 by default), each bringing ONE new class;
- B: ONE stage bringing `--classes-at-once` classes (1,000 by default).

The data are synthetic: Gaussian clusters, one per class, drawn with a fixed
NumPy seed (`--seed`). No real data set has 200 or 1,000 classes of the
right size for this; the runs measure time and memory, not accuracy.

Per stage it records:

- wall time (and the process's CPU time): `prepare`, the whole `fit`, and
  inside it the stage's beginning (head growth, teacher, train function
  reuse), the training epochs, and the stage's end (memory update,
  checkpoint write);
- traces: how many times the train, test and predict steps were traced.
  Keras's TensorFlow trainer wraps `model.train_step` (and `test_step`,
  `predict_step`) in a `tf.function`; the Python body of a `tf.function`
  runs only when it is traced, so a counting wrapper put on the model
  instance before the first `fit` counts the traces (retraces included);
- memory: the resident set size (`VmRSS` of `/proc/self/status`, after a
  `gc.collect()`), with `--tracemalloc` the Python heap as well (slower);
- the exemplar memory's size against its budget, and the checkpoint's size.

With `--predict`, each stage ends as the loop users write does, with
`model.predict` on held-out samples of the classes seen (timed apart).

It prints a table every `--print-every` stages and, at the end, the targets
with PASS or MISS:

- time: the median stage time of the last 10 stages (191-200 of 200) at
  most 1.5x the median of an early window of 10 stages. Medians over
  windows, as single stages are noisy on a shared machine. The early
  window is stages 6-15 unless those still replay fewer exemplars (the
  memory fills up over the first stages: with the defaults, 30 samples a
  class and a budget of 500, until stage 17), then the first 10 stages
  that train on as many samples as the last one (18-27). The ratio against
  stages 6-15, in CPU time and per train step are printed too;
- RSS: less than 20 MB growth from stage 10 to the last stage (and the
  least-squares slope in KB per stage);
- memory: the exemplar memory at its budget after the last stage.

    python benchmarks/long_run.py --stages 200 --json long_run.json
    python benchmarks/long_run.py --stages 0 --classes-at-once 1000
"""

import argparse
import dataclasses
import functools
import gc
import json
import os
import platform
import statistics
import tempfile
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_incremental as ki  # noqa: E402
from keras_incremental.memory import ExemplarMemory  # noqa: E402
from keras_incremental.saving import checkpoint as checkpoints  # noqa: E402

WINDOW = 10  # stages per window of the time target
FIRST_EARLY_STAGE = 6  # the early window starts here at the earliest
RSS_FROM_STAGE = 10
TIME_RATIO_TARGET = 1.5
RSS_GROWTH_TARGET_MB = 20.0


def class_samples(label, per_class, features, seed, split=0, spread=3.0):
    """`per_class` samples of one synthetic class: a Gaussian cluster.

    The cluster's centre comes from a generator seeded by `(seed, label)`,
    so a class is the same whichever stage brings it; its samples from one
    seeded by `(seed, label, split)` (0: training, 1: held out).
    """
    centre = np.random.default_rng([seed, label]).normal(0.0, spread, features)
    rng = np.random.default_rng([seed, label, split])
    noise = rng.normal(0.0, 1.0, (per_class, features))
    return (centre + noise).astype("float32")


def stage_data(labels, per_class, features, seed, split=0):
    """The samples and labels of the classes `labels`."""
    x = np.concatenate(
        [class_samples(c, per_class, features, seed, split) for c in labels]
    )
    y = np.repeat(np.asarray(labels, dtype="int64"), per_class)
    return x, y


def build_model(features, hidden):
    """MLP input-`hidden`-classes, its head an `ExpandableDense(0)`."""
    model = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            ki.ExpandableDense(0, name="head"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def rss_mb():
    """The process's resident set size in MB (`VmRSS`), after a collect."""
    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class TraceCounter:
    """Counts the traces of a model's train, test and predict steps.

    The step methods run in Python only while their `tf.function` is
    traced; wrappers set on the instance (read by `make_*_function`) count
    those runs. `remove()` takes them off again.
    """

    KINDS = ("train", "test", "predict")

    def __init__(self, model):
        self.model = model
        self.counts = dict.fromkeys(self.KINDS, 0)
        for kind in self.KINDS:
            setattr(model, f"{kind}_step", self._counting(kind))

    def _counting(self, kind):
        step = getattr(type(self.model), f"{kind}_step")

        def counted(*args, **kwargs):
            self.counts[kind] += 1
            return step(self.model, *args, **kwargs)

        return counted

    def snapshot(self):
        return dict(self.counts)

    def remove(self):
        for kind in self.KINDS:
            vars(self.model).pop(f"{kind}_step", None)


class StageClock(keras.callbacks.Callback):
    """Marks when the training epochs of a `fit` begin and end.

    Listed after the `IncrementalModel`, its `on_train_begin` comes after
    the stage's beginning (growth, teacher), and its `on_train_end` before
    the stage's end (which runs after every callback's `on_train_end`).
    """

    def on_train_begin(self, logs=None):
        self.begin = time.perf_counter()

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()


class StageEndTimer:
    """Times the parts of a stage's end: memory update, checkpoint write.

    Wraps `ExemplarMemory.update` (on the class: the callback may update a
    copy of its memory) and the checkpoint writer of
    `keras_incremental.saving.checkpoint` (which the callback calls through its
    module); `remove()` puts both back.
    """

    def __init__(self):
        self.seconds = {"memory": 0.0, "checkpoint": 0.0}
        self._write = checkpoints.write_checkpoint
        self._update = ExemplarMemory.update
        ExemplarMemory.update = self._timed("memory", self._update)
        checkpoints.write_checkpoint = self._timed("checkpoint", self._write)

    def _timed(self, name, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed

    def reset(self):
        self.seconds = dict.fromkeys(self.seconds, 0.0)

    def remove(self):
        checkpoints.write_checkpoint = self._write
        ExemplarMemory.update = self._update


@dataclasses.dataclass
class Probes:
    """What measures a stage besides the clock around it."""

    clock: StageClock
    timer: StageEndTimer
    counter: TraceCounter


def run_stage(model, inc, x, y, args, probes):
    """Trains one stage and returns its record."""
    clock, timer, counter = probes.clock, probes.timer, probes.counter
    timer.reset()
    traces = counter.snapshot()
    start = time.perf_counter()
    cpu = time.process_time()
    xs, ys = inc.prepare(x, y)
    prepared = time.perf_counter()
    model.fit(
        xs,
        ys,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[inc, clock],
        verbose=0,
    )
    done = time.perf_counter()
    cpu = time.process_time() - cpu
    predict_s = None
    if args.predict:
        # As the loop every user writes: predictions on the classes seen.
        seen = np.arange(len(inc.classes_))
        x_eval, _ = stage_data(
            seen, args.eval_per_class, args.features, args.seed, split=1
        )
        predicted = time.perf_counter()
        model.predict(x_eval, batch_size=256, verbose=0)
        predict_s = time.perf_counter() - predicted
    after = counter.snapshot()
    record = {
        "stage": inc.stage_,  # stages finished, so counted from 1
        "classes": len(inc.classes_),
        "samples": int(len(xs)),
        "steps": args.epochs * -(-len(xs) // args.batch_size),
        "stage_s": done - start,
        "stage_cpu_s": cpu,
        "prepare_s": prepared - start,
        "fit_s": done - prepared,
        "begin_s": clock.begin - prepared,
        "train_s": clock.end - clock.begin,
        "end_s": done - clock.end,
        "memory_update_s": timer.seconds["memory"],
        "checkpoint_s": timer.seconds["checkpoint"],
        "predict_s": predict_s,
        "traces": {k: after[k] - traces[k] for k in after},
        "rss_mb": rss_mb(),
        "memory_count": len(inc.memory),
        "memory_budget": inc.memory_size,
        "checkpoint_bytes": os.path.getsize(inc.checkpoint)
        if inc.checkpoint
        else 0,
    }
    if args.tracemalloc:
        record["heap_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
    return record


COLUMNS = (
    ("stage", "stage", "{:>5d}"),
    ("classes", "cls", "{:>5d}"),
    ("stage_s", "stage s", "{:>8.3f}"),
    ("train_s", "train s", "{:>8.3f}"),
    ("end_s", "end s", "{:>7.3f}"),
    ("checkpoint_s", "ckpt s", "{:>7.3f}"),
    ("traces", "traces", "{:>6d}"),
    ("rss_mb", "RSS MB", "{:>8.1f}"),
    ("heap_mb", "heap MB", "{:>8.2f}"),
    ("memory_count", "memory", "{:>6d}"),
    ("checkpoint_bytes", "ckpt KB", "{:>8.0f}"),
)


def table_row(record, header=False):
    cells = []
    for key, title, form in COLUMNS:
        if key == "heap_mb" and "heap_mb" not in record:
            continue
        if header:
            width = len(form.format(0))
            cells.append(f"{title:>{width}}")
            continue
        value = record[key]
        if key == "traces":
            value = sum(value.values())
        elif key == "checkpoint_bytes":
            value = value / 1024
        cells.append(form.format(value))
    return " ".join(cells)


def run_scenario(schedule, args, folder, name, on_stage=None):
    """Runs the stages of `schedule` (a list of class lists) on a new model.

    Args:
        schedule: The classes each stage brings.
        args: The parsed command line.
        folder: Where the checkpoint is written.
        name: The scenario's name, for the checkpoint file.
        on_stage: Optional callable `(record)` after each stage.

    Returns:
        The list of stage records.
    """
    keras.utils.set_random_seed(args.seed)
    model = build_model(args.features, args.hidden)
    inc = ki.IncrementalModel(
        strategy=args.strategy,
        memory_size=args.memory_size,
        checkpoint=os.path.join(folder, f"{name}.keras"),
        seed=args.seed,
    )
    probes = Probes(StageClock(), StageEndTimer(), TraceCounter(model))
    records = []
    brought = 0  # the samples of all stages so far
    try:
        for labels in schedule:
            x, y = stage_data(labels, args.per_class, args.features, args.seed)
            record = run_stage(model, inc, x, y, args, probes)
            brought += len(y)
            record["samples_brought"] = brought
            records.append(record)
            if on_stage is not None:
                on_stage(record)
    finally:
        probes.timer.remove()
        probes.counter.remove()
    return records


def window_median(records, first, last, key="stage_s", per=None):
    """Median of `key` (divided by `per`, if given) over the stages
    `first`..`last`, counted from 1, both included."""
    values = [
        r[key] / (max(r[per], 1) if per else 1)
        for r in records[first - 1 : last]
    ]
    return statistics.median(values) if values else float("nan")


def rss_slope(records, first):
    """MB per stage: least-squares slope of the RSS from stage `first` on."""
    points = [(r["stage"], r["rss_mb"]) for r in records[first - 1 :]]
    if len(points) < 2:
        return float("nan")
    stages, rss = np.asarray(points, dtype="float64").T
    return float(np.polyfit(stages, rss, 1)[0])


def early_window(records):
    """The early window of the time target: `WINDOW` stages from the first
    one (not before `FIRST_EARLY_STAGE`) that trains on as many samples as
    the last stage, i.e. once the memory holds its budget. Stages before it
    replay fewer exemplars, and are faster for that reason alone."""
    full = records[-1]["samples"]
    first = next(
        (
            r["stage"]
            for r in records[FIRST_EARLY_STAGE - 1 :]
            if r["samples"] == full
        ),
        FIRST_EARLY_STAGE,
    )
    return first, first + WINDOW - 1


def targets(records):
    """The long run's targets, each with its value and PASS/MISS (`passed`
    is `None` when the run is too short to tell)."""
    count = len(records)
    results = {}
    early = early_window(records)
    late = (max(1, count - WINDOW + 1), count)
    early_s = window_median(records, *early)
    late_s = window_median(records, *late)
    comparable = early[1] < late[0]

    def ratio(**kwargs):
        return window_median(records, *late, **kwargs) / window_median(
            records, *early, **kwargs
        )

    results["time_ratio"] = {
        "what": (
            f"median stage time, stages {late[0]}-{late[1]} / stages "
            f"{early[0]}-{early[1]}"
        ),
        "early_window": early,
        "late_window": late,
        "early_median_s": early_s,
        "late_median_s": late_s,
        "value": late_s / early_s,
        "target": f"<= {TIME_RATIO_TARGET}",
        "passed": late_s / early_s <= TIME_RATIO_TARGET if comparable else None,
        # Informative: the same ratio in CPU time (less sensitive to other
        # processes on the machine), per train step, and against stages
        # 6-15, which replay fewer exemplars.
        "cpu_ratio": ratio(key="stage_cpu_s"),
        "train_step_ratio": ratio(key="train_s", per="steps"),
        "ratio_vs_stages_6_15": late_s / window_median(records, 6, 15),
    }
    enough = count > RSS_FROM_STAGE
    start = records[RSS_FROM_STAGE - 1]["rss_mb"] if enough else float("nan")
    growth = records[-1]["rss_mb"] - start
    results["rss_growth_mb"] = {
        "what": f"RSS after stage {count} - RSS after stage {RSS_FROM_STAGE}",
        "rss_start_mb": start,
        "rss_end_mb": records[-1]["rss_mb"],
        "slope_mb_per_stage": rss_slope(records, RSS_FROM_STAGE),
        "value": growth,
        "target": f"< {RSS_GROWTH_TARGET_MB}",
        "passed": growth < RSS_GROWTH_TARGET_MB if enough else None,
    }
    last = records[-1]
    results["memory_at_budget"] = {
        "what": "exemplars in memory after the last stage / budget",
        "value": last["memory_count"],
        "budget": last["memory_budget"],
        "target": "== budget",
        "passed": last["memory_count"] == last["memory_budget"]
        if last["samples_brought"] >= last["memory_budget"]
        else None,
    }
    return results


def print_targets(results):
    verdicts = {True: "PASS", False: "MISS", None: "n/a "}
    for name, target in results.items():
        value = target["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        if name == "memory_at_budget":
            shown = f"{value} / {target['budget']}"
        print(
            f"  {verdicts[target['passed']]}  {name}: {shown} "
            f"({target['target']}); {target['what']}"
        )
    time_ratio = results["time_ratio"]
    rss = results["rss_growth_mb"]
    print(
        f"        time ratio in CPU time {time_ratio['cpu_ratio']:.3f}, per "
        f"train step {time_ratio['train_step_ratio']:.3f}, against stages "
        f"6-15 {time_ratio['ratio_vs_stages_6_15']:.3f}; RSS slope from "
        f"stage {RSS_FROM_STAGE}: "
        f"{rss['slope_mb_per_stage'] * 1024:.1f} KB/stage"
    )


def scenario_a(args, folder):
    """Many stages, one new class each."""
    schedule = [[c] for c in range(args.stages)]
    print(f"Scenario A: {args.stages} stages of one new class")
    print(table_row({"heap_mb": 0} if args.tracemalloc else {}, header=True))

    def show(record):
        number = record["stage"]
        if number % args.print_every == 0 or number in (1, args.stages):
            print(table_row(record), flush=True)

    records = run_scenario(schedule, args, folder, "scenario_a", show)
    results = targets(records)
    early, late = (
        results["time_ratio"]["early_median_s"],
        results["time_ratio"]["late_median_s"],
    )
    summary = {
        "stage_10_window_median_s": early,
        "last_window_median_s": late,
        "rss_stage_10_mb": results["rss_growth_mb"]["rss_start_mb"],
        "rss_last_mb": records[-1]["rss_mb"],
        "rss_slope_mb_per_stage": results["rss_growth_mb"][
            "slope_mb_per_stage"
        ],
        "traces_total": sum(sum(r["traces"].values()) for r in records),
        "traces_after_stage_2": sum(
            sum(r["traces"].values()) for r in records[2:]
        ),
        "checkpoint_bytes_last": records[-1]["checkpoint_bytes"],
    }
    print("Targets:")
    print_targets(results)
    return {"stages": records, "summary": summary, "targets": results}


def scenario_b(args, folder):
    """One stage bringing many classes at once."""
    classes = args.classes_at_once
    print(f"Scenario B: one stage of {classes} classes")
    before = rss_mb()
    records = run_scenario([list(range(classes))], args, folder, "scenario_b")
    record = records[0]
    print(table_row({"heap_mb": 0} if args.tracemalloc else {}, header=True))
    print(table_row(record))
    memory_ok = record["memory_count"] == min(
        record["memory_budget"], record["samples"]
    )
    print(
        f"  stage {record['stage_s']:.2f} s (fit {record['fit_s']:.2f} s, "
        f"end {record['end_s']:.2f} s), RSS {before:.0f} -> "
        f"{record['rss_mb']:.0f} MB, memory {record['memory_count']} / "
        f"{record['memory_budget']} ({'PASS' if memory_ok else 'MISS'})"
    )
    return {
        "stage": record,
        "rss_before_mb": before,
        "rss_growth_mb": record["rss_mb"] - before,
        "memory_at_budget": memory_ok,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Synthetic Gaussian classes: measures time and memory, not "
        "accuracy.",
    )
    parser.add_argument(
        "--stages",
        type=int,
        default=200,
        help="scenario A: stages of one new class each; 0 skips it "
        "(default: 200)",
    )
    parser.add_argument(
        "--classes-at-once",
        type=int,
        default=1000,
        help="scenario B: classes of its one stage; 0 skips it (default: 1000)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the synthetic classes, the weights and the exemplar "
        "choice (default: 0)",
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=30,
        help="samples per class (default: 30)",
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per stage (default: 3)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="(default: 32)"
    )
    parser.add_argument(
        "--memory-size",
        type=int,
        default=500,
        help="exemplar budget (default: 500)",
    )
    parser.add_argument(
        "--strategy",
        default="default",
        help="strategy name, see `keras_incremental.strategies.NAMED` "
        "(default: default)",
    )
    parser.add_argument(
        "--predict",
        action="store_true",
        help="after each stage, `model.predict` on held-out samples of the "
        "classes seen, as a user's loop does (timed apart, not in the "
        "stage time; its traces are counted)",
    )
    parser.add_argument(
        "--eval-per-class",
        type=int,
        default=10,
        help="held-out samples per class for --predict (default: 10)",
    )
    parser.add_argument(
        "--features", type=int, default=32, help="inputs (default: 32)"
    )
    parser.add_argument(
        "--hidden", type=int, default=64, help="hidden units (default: 64)"
    )
    parser.add_argument(
        "--print-every",
        type=int,
        default=10,
        help="print a table row every N stages (default: 10)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also record the Python heap per stage (slower)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        help="folder of the checkpoints (default: a temporary one)",
    )
    parser.add_argument("--json", help="write every record to this file")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.tracemalloc:
        tracemalloc.start()
    results = {"arguments": vars(args), "rss_start_mb": rss_mb()}
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.checkpoint_dir or temporary
        if args.stages > 0:
            results["scenario_a"] = scenario_a(args, folder)
        if args.classes_at_once > 0:
            results["scenario_b"] = scenario_b(args, folder)
    results.update(
        keras=keras.__version__,
        tensorflow=tf.__version__,
        backend=keras.backend.backend(),
        python=platform.python_version(),
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    main()
