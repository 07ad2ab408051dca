"""A stage's records: accuracy on each stage's classes, metrics, report."""

import os

from keras_incremental import metrics
from keras_incremental.data import stage_data
from keras_incremental.data.labels import plain_label


def stage_record(encoder, stage_classes, evaluation=None, predict=None):
    """The history entry of the stage whose classes end `stage_classes`.

    Args:
        encoder: The run's `LabelEncoder`.
        stage_classes: The class indices of each stage so far, this one
            last.
        evaluation: Optional `(x_test, labels)` (checked, labels as given
            to `prepare`).
        predict: With `evaluation`: a function `x -> class indices`.

    Returns:
        A JSON-able dict: `stage`, `classes` (names) and, with evaluation
        data, `row` (the accuracy on each stage's classes, NaN for a stage
        with none in the test data) and `accuracy` (on all classes seen).
    """
    entry = {
        "stage": len(stage_classes) - 1,
        "classes": [
            plain_label(encoder.classes_[i]) for i in stage_classes[-1]
        ],
    }
    if evaluation is None:
        return entry
    x_test, labels = evaluation
    indices = stage_data.evaluation_indices(labels, encoder)
    seen = indices >= 0
    groups = [g for g in stage_classes if g]
    if seen.any() and groups:
        predicted = predict(x_test[seen])
        row, overall = metrics.stage_accuracies(
            indices[seen], predicted, groups
        )
        row = iter(row)
        entry["row"] = [next(row) if g else float("nan") for g in stage_classes]
        entry["accuracy"] = overall
    else:
        # No class of a stage in the test data yet: a row all the same, so
        # that the accuracy matrix stays square.
        entry["row"] = [float("nan")] * len(stage_classes)
        entry["accuracy"] = float("nan")
    return entry


def summarize(history):
    """The continual metrics of a run's `history` (see
    `IncrementalModel.metrics`); empty without evaluation data."""
    rows = [h["row"] for h in history if "row" in h]
    if not rows or len(rows) != len(history):
        return {}
    overall = [h["accuracy"] for h in history]
    return metrics.summarize(metrics.accuracy_matrix(rows), overall)


def write_report(path, strategy_name, classes, history):
    """Writes the JSON report of a run and, with matplotlib, its plot (the
    same name, `.png`)."""
    report = {
        "strategy": strategy_name,
        "classes": [plain_label(c) for c in classes],
        **summarize(history),
        "history": list(history),
    }
    metrics.write_report(report, path)
    curve = [h["accuracy"] for h in history if "accuracy" in h]
    if curve:
        try:
            metrics.plot_accuracy(
                {strategy_name: curve}, os.path.splitext(path)[0] + ".png"
            )
        except ImportError:
            pass  # matplotlib is an optional extra
