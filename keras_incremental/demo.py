"""`keras-incremental demo`: a class-incremental run on real digits.

The newcomer's tour: scikit-learn's handwritten digits (shipped with the
package, no network) arrive in five stages of two classes, named "zero" to
"nine". One `IncrementalModel` grows the head, replays exemplars and
distils the previous stage, and after each stage writes a checkpoint, a JSON
report (and plot) and a TensorFlow Serving version. A plain fine-tuned model
runs alongside, to show what forgetting looks like.
"""

import argparse
import os
import sys
import time

NAMES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)


def parser(prog="keras-incremental demo"):
    """The argument parser of the `demo` command."""
    result = argparse.ArgumentParser(
        prog=prog,
        description=(
            "A class-incremental run on scikit-learn's digits: five stages "
            "of two new classes, against plain fine-tuning."
        ),
    )
    result.add_argument(
        "--output",
        default="keras-incremental-demo",
        help="Folder for the checkpoint, report, plot and serving export "
        "(default: ./keras-incremental-demo).",
    )
    result.add_argument(
        "--epochs", type=int, default=5, help="Epochs per stage (default 5)."
    )
    result.add_argument(
        "--quick",
        action="store_true",
        help="A short run (2 epochs per stage) for smoke tests.",
    )
    return result


def _data():
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise SystemExit(
            "The demo's data comes with scikit-learn: pip install "
            "scikit-learn (or the package's `bench` extra)."
        ) from error
    import numpy as np

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = np.asarray(NAMES)[digits.target]
    return train_test_split(
        x, y, test_size=0.2, stratify=digits.target, random_state=0
    )


def _model():
    import keras

    import keras_incremental as ki

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu", name="dense_1"),
            keras.layers.Dense(256, activation="relu", name="dense_2"),
            ki.ExpandableDense(0, name="head"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class _StageProgress:
    """A `keras.utils.Progbar` over a stage's epochs, as a callback."""

    def __new__(cls, epochs, label):
        import keras

        class Progress(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                print(label)
                # Logs are per-epoch means already: shown as they are.
                self.bar = keras.utils.Progbar(
                    epochs,
                    unit_name="epoch",
                    stateful_metrics=["loss", "accuracy"],
                )

            def on_epoch_end(self, epoch, logs=None):
                self.bar.update(
                    epoch + 1,
                    values=[(k, v) for k, v in (logs or {}).items()],
                )

        return Progress()


def run(output, epochs, out=sys.stdout):
    """Runs the demo, writing into `output`; returns the two runs' metrics."""
    import keras
    import numpy as np

    import keras_incremental as ki

    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = _data()
    stages = [list(NAMES[i : i + 2]) for i in range(0, len(NAMES), 2)]
    os.makedirs(output, exist_ok=True)
    paths = {
        "checkpoint": os.path.join(output, "stages.keras"),
        "report": os.path.join(output, "report.json"),
        "serving": os.path.join(output, "serving"),
    }
    model = _model()
    inc = ki.IncrementalModel(
        memory_size=200,
        checkpoint=paths["checkpoint"],
        evaluation=(x_test, y_test),
        report=paths["report"],
        export_dir=paths["serving"],
    )
    baseline = _model()
    plain = ki.IncrementalModel(
        strategy="finetune", evaluation=(x_test, y_test)
    )
    rows = []
    start = time.perf_counter()
    for number, classes in enumerate(stages, start=1):
        mask = np.isin(y_train, classes)
        xs, ys = inc.prepare(x_train[mask], y_train[mask])
        progress = _StageProgress(
            epochs, f"stage {number}/{len(stages)}: new classes {classes}"
        )
        model.fit(
            xs,
            ys,
            epochs=epochs,
            batch_size=32,
            verbose=0,
            callbacks=[inc, progress],
        )
        xb, yb = plain.prepare(x_train[mask], y_train[mask])
        baseline.fit(
            xb, yb, epochs=epochs, batch_size=32, verbose=0, callbacks=[plain]
        )
        rows.append(_stage_row(number, classes, inc, plain, x_test, y_test))
    seconds = time.perf_counter() - start
    print(file=out)
    print(_table(rows), file=out)
    ours, theirs = inc.metrics(), plain.metrics()
    print(file=out)
    print(
        f"final accuracy on all 10 classes: {100 * ours['final_accuracy']:.1f}%"
        f" (plain fine-tuning: {100 * theirs['final_accuracy']:.1f}%)",
        file=out,
    )
    print(
        f"forgetting: {100 * ours['forgetting']:.1f} points "
        f"(plain fine-tuning: {100 * theirs['forgetting']:.1f})",
        file=out,
    )
    print(f"both runs took {seconds:.1f} s", file=out)
    print(file=out)
    print(f"written to {os.path.abspath(output)}:", file=out)
    for name in sorted(os.listdir(output)):
        print(f"  {name}", file=out)
    print(
        "restore with keras_incremental.IncrementalModel.restore("
        f"{paths['checkpoint']!r})",
        file=out,
    )
    return {"ours": ours, "finetune": theirs, "paths": paths}


def _stage_row(number, classes, inc, plain, x_test, y_test):
    import numpy as np

    seen = np.isin(y_test, inc.classes_)
    new = np.isin(y_test, classes)
    old = seen & ~new

    def accuracy(runner, mask):
        if not mask.any():
            return float("nan")
        names = runner.decode(runner.predict(x_test[mask]))
        return float(np.mean(np.asarray(names) == y_test[mask]))

    return {
        "stage": number,
        "new": ", ".join(classes),
        "old": accuracy(inc, old),
        "new_accuracy": accuracy(inc, new),
        "all": accuracy(inc, seen),
        "finetune": accuracy(plain, seen),
    }


def _table(rows):
    lines = [
        "stage  new classes    old classes  new classes  all seen  "
        "plain fine-tuning",
    ]
    for row in rows:
        old = (
            "    -" if row["old"] != row["old"] else f"{100 * row['old']:5.1f}%"
        )
        lines.append(
            f"{row['stage']:>5}  {row['new']:<13} {old:>11}  "
            f"{100 * row['new_accuracy']:10.1f}%  {100 * row['all']:7.1f}%  "
            f"{100 * row['finetune']:16.1f}%"
        )
    return "\n".join(lines)


def main(argv=None, prog="keras-incremental demo"):
    """Entry point of `keras-incremental demo`."""
    arguments = parser(prog).parse_args(argv)
    epochs = 2 if arguments.quick else arguments.epochs
    if epochs < 1:
        parser(prog).error(f"--epochs must be >= 1; received {epochs}")
    run(arguments.output, epochs)
    return 0
