"""Continual-learning metrics: accuracy matrix, forgetting, transfer.

Pure NumPy. All accuracies are fractions in [0, 1]. The accuracy matrix `A`
of a run with `T` stages is `T x T`: `A[i, j]` is the accuracy on the test
samples of stage `j`'s classes after training stage `i` (`j <= i`); entries
above the diagonal are `nan`. A stage with no test samples gives `nan`, and
`nan` entries are left out of every mean.

Example:

```python
from keras_incremental import metrics

stage_classes = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
rows, overall = [], []
for i in range(len(stage_classes)):
    ...  # train on stage i, then predict: y_pred = ...argmax(-1)
    row, accuracy = metrics.stage_accuracies(
        y_test, y_pred, stage_classes[: i + 1]
    )
    rows.append(row)
    overall.append(accuracy)
report = metrics.summarize(metrics.accuracy_matrix(rows), overall)
metrics.write_report(report, "run/report.json")
metrics.plot_accuracy({"replay": overall}, "run/accuracy.png")
```
"""

import json
import math
import os

import numpy as np

from keras_incremental.saving.files import atomic_path


def stage_accuracies(y_true, y_pred, stages):
    """Accuracy on each stage's classes, and on all of them together.

    Only the samples whose true class belongs to one of `stages` count, so
    the full test set can be passed after every stage.

    Args:
        y_true: 1-D integer array, the true class index of each test sample.
        y_pred: 1-D integer array of the same length, the predicted class
            indices.
        stages: list of lists of class indices: the classes that each stage
            seen so far brought (stages 0 to i).

    Returns:
        `(row, overall)`: `row` a list with one float per stage, the accuracy
        on the test samples of that stage's classes (`nan` when it has none);
        `overall` a float, the accuracy over all the counted samples (`nan`
        when there are none).

    Raises:
        ValueError: when the arrays are not 1-D, differ in length, or
            `stages` is empty, has an empty stage or a class in two stages.
        TypeError: when the labels are not integers.

    Example:

    ```python
    row, overall = stage_accuracies(
        [0, 1, 2, 3, 9], [0, 0, 2, 2, 9], [[0, 1], [2, 3]]
    )
    # row == [0.5, 0.5], overall == 0.5 (class 9 is in no stage)
    ```
    """
    y_true = _check_labels(y_true, "y_true")
    y_pred = _check_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            "Expected `y_true` and `y_pred` of the same length. Received: "
            f"len(y_true)={len(y_true)}, len(y_pred)={len(y_pred)}"
        )
    stages = _check_stages(stages)
    correct = y_true == y_pred
    row = []
    for classes in stages:
        in_stage = np.isin(y_true, classes)
        row.append(_fraction(correct[in_stage]))
    counted = np.isin(y_true, np.concatenate(stages))
    return row, _fraction(correct[counted])


def accuracy_matrix(rows):
    """Builds the square accuracy matrix from triangular rows.

    Args:
        rows: list of `T` rows; row `i` has `i + 1` accuracies, the accuracy
            on stage `j`'s classes after training stage `i` (the `row` of
            `stage_accuracies`). `None` is read as `nan`.

    Returns:
        A float64 NumPy array of shape `(T, T)`, `nan` above the diagonal.

    Raises:
        ValueError: when `rows` is empty, a row has the wrong number of
            entries, or an accuracy is outside [0, 1].

    Example:

    ```python
    accuracy_matrix([[1.0], [0.8, 0.9]])
    # array([[1. , nan],
    #        [0.8, 0.9]])
    ```
    """
    rows = list(rows)
    if not rows:
        raise ValueError(
            "Expected at least one row of accuracies (one per stage). "
            "Received: rows=[]"
        )
    size = len(rows)
    matrix = np.full((size, size), np.nan)
    for i, row in enumerate(rows):
        values = np.array(row, dtype=np.float64)
        if values.shape != (i + 1,):
            raise ValueError(
                f"Expected row {i} to hold {i + 1} accuracies (one per stage "
                f"seen after stage {i}). Received: {list(row)!r}"
            )
        matrix[i, : i + 1] = values
    _check_range(matrix, "the accuracy matrix")
    return matrix


def final_accuracy(matrix, overall=None):
    """Accuracy on all the classes seen, after the last stage.

    Args:
        matrix: the accuracy matrix (from `accuracy_matrix`), or its rows.
        overall: optional list of per-stage accuracies on all classes seen
            (the `overall` of `stage_accuracies`), weighted by samples.
            Defaults to `None`, which uses the mean of the last row.

    Returns:
        A float: `overall[-1]` when given, else the mean of the last row.

    Raises:
        ValueError: when `matrix` or `overall` is malformed.
    """
    matrix = _check_matrix(matrix)
    if overall is not None:
        return float(_check_overall(overall, len(matrix))[-1])
    return _mean(matrix[-1])


def average_incremental_accuracy(matrix, overall=None):
    """Mean over stages of the accuracy on all classes seen so far.

    Args:
        matrix: the accuracy matrix (from `accuracy_matrix`), or its rows.
        overall: optional list of per-stage accuracies on all classes seen.
            Defaults to `None`, which uses the mean of each row.

    Returns:
        A float: the mean of `overall`, or of the row means.

    Raises:
        ValueError: when `matrix` or `overall` is malformed.

    References:
        - [Rebuffi et al., 2017](https://arxiv.org/abs/1611.07725)
    """
    return _mean(np.array(_stage_accuracy(matrix, overall)))


def forgetting(matrix):
    """Average forgetting: best accuracy minus final accuracy.

    For each earlier stage `j < T - 1`, the best accuracy on its classes
    before the last stage, `max(A[j:T-1, j])`, minus the final one,
    `A[T-1, j]`; averaged over those stages. Higher means more forgetting.

    Args:
        matrix: the accuracy matrix (from `accuracy_matrix`), or its rows.

    Returns:
        A float; `0.0` for a single stage.

    Raises:
        ValueError: when `matrix` is malformed.

    References:
        - [Chaudhry et al., 2018](https://arxiv.org/abs/1801.10112)
    """
    matrix = _check_matrix(matrix)
    last = len(matrix) - 1
    if last == 0:
        return 0.0
    drops = []
    for j in range(last):
        earlier = matrix[j:last, j]
        earlier = earlier[~np.isnan(earlier)]
        best = earlier.max() if earlier.size else math.nan
        drops.append(best - matrix[last, j])
    return _mean(np.array(drops))


def backward_transfer(matrix):
    """Backward transfer: final accuracy minus just-learned accuracy.

    The mean over earlier stages `j < T - 1` of `A[T-1, j] - A[j, j]`.
    Negative means forgetting.

    Args:
        matrix: the accuracy matrix (from `accuracy_matrix`), or its rows.

    Returns:
        A float; `0.0` for a single stage.

    Raises:
        ValueError: when `matrix` is malformed.

    References:
        - [Lopez-Paz & Ranzato, 2017](https://arxiv.org/abs/1706.08840)
    """
    matrix = _check_matrix(matrix)
    last = len(matrix) - 1
    if last == 0:
        return 0.0
    diagonal = np.diagonal(matrix)[:last]
    return _mean(matrix[last, :last] - diagonal)


def summarize(matrix, overall=None):
    """All the metrics of a run in one JSON-able dict.

    Args:
        matrix: the accuracy matrix (from `accuracy_matrix`), or its rows.
        overall: optional list of per-stage accuracies on all classes seen.
            Defaults to `None`, which uses the row means.

    Returns:
        A dict with `accuracy_matrix` (nested lists, `None` for `nan`),
        `final_accuracy`, `average_incremental_accuracy`, `forgetting`,
        `backward_transfer` and `stage_accuracy` (per-stage accuracy on all
        classes seen). All numbers are plain Python floats.

    Raises:
        ValueError: when `matrix` or `overall` is malformed.
    """
    matrix = _check_matrix(matrix)
    return {
        "accuracy_matrix": [
            [None if math.isnan(value) else value for value in row]
            for row in matrix.tolist()
        ],
        "final_accuracy": final_accuracy(matrix, overall),
        "average_incremental_accuracy": average_incremental_accuracy(
            matrix, overall
        ),
        "forgetting": forgetting(matrix),
        "backward_transfer": backward_transfer(matrix),
        "stage_accuracy": _stage_accuracy(matrix, overall),
    }


def write_report(report, path):
    """Writes `report` as indented JSON, atomically.

    The JSON goes to a temporary file in the same folder, moved into place
    with `os.replace`, so a crash never leaves half a report. The folder is
    made when missing. `nan` and infinite floats are written as `null`;
    NumPy arrays and scalars as lists and numbers.

    Args:
        report: a dict, e.g. from `summarize`.
        path: the file to write.

    Returns:
        `path`, as a string.

    Raises:
        TypeError: when `report` is not a dict, or holds a value JSON cannot
            represent.
    """
    if not isinstance(report, dict):
        raise TypeError(
            "Expected `report` to be a dict. Received: "
            f"{report!r} of type {type(report).__name__}"
        )
    path = os.fspath(path)
    text = json.dumps(_jsonable(report), indent=2, allow_nan=False)
    with atomic_path(path, ".json") as temporary:
        with open(temporary, "w") as file:
            file.write(text + "\n")
    return path


def plot_accuracy(curves, path, title=None):
    """Plots accuracy on the classes seen per stage, one line per run.

    Needs matplotlib, an optional extra (`pip install matplotlib`). The PNG
    is written to a temporary file in the same folder, then moved into
    place with `os.replace`.

    Args:
        curves: dict from a name (the legend entry) to a list of per-stage
            accuracies in [0, 1], e.g. the `overall` values of
            `stage_accuracies`.
        path: the PNG file to write.
        title: optional title of the plot. Defaults to `None` (no title).

    Returns:
        `path`, as a string.

    Raises:
        ImportError: when matplotlib is not installed.
        ValueError: when `curves` is empty, a curve is empty, or an accuracy
            is outside [0, 1].
    """
    if not isinstance(curves, dict) or not curves:
        raise ValueError(
            "Expected `curves` to be a non-empty dict from a name to a list "
            f"of per-stage accuracies. Received: curves={curves!r}"
        )
    checked = {}
    for name, values in curves.items():
        values = np.array(values, dtype=np.float64)
        if values.ndim != 1 or not values.size:
            raise ValueError(
                f"Expected curve '{name}' to be a non-empty list of per-stage "
                f"accuracies. Received: {curves[name]!r}"
            )
        _check_range(values, f"curve '{name}'")
        checked[name] = values
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "`plot_accuracy` needs matplotlib, an optional extra of "
            "keras_incremental. Install it with `pip install matplotlib`."
        ) from error
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, values in checked.items():
        stages = np.arange(1, len(values) + 1)
        axes.plot(stages, values * 100, marker="o", label=str(name))
    longest = max(len(values) for values in checked.values())
    axes.set_xticks(range(1, longest + 1))
    axes.set_xlabel("stage")
    axes.set_ylabel("accuracy on classes seen (%)")
    axes.grid(alpha=0.3)
    axes.legend()
    if title is not None:
        axes.set_title(title)
    figure.tight_layout()
    path = os.fspath(path)
    with atomic_path(path, ".png") as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    return path


def _check_labels(labels, name):
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(
            f"Expected `{name}` to be a 1-D array of class indices. "
            f"Received: shape {array.shape}"
        )
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(
            f"Expected `{name}` to hold integer class indices. "
            f"Received: dtype {array.dtype}"
        )
    return array.astype(np.int64)


def _check_stages(stages):
    if isinstance(stages, np.ndarray):
        stages = stages.tolist()
    if not isinstance(stages, (list, tuple)) or not len(stages):
        raise ValueError(
            "Expected `stages` to be a non-empty list of lists of class "
            f"indices (one list per stage seen). Received: stages={stages!r}"
        )
    checked = []
    seen = set()
    for i, classes in enumerate(stages):
        classes = np.asarray(classes)
        if classes.ndim != 1 or not classes.size:
            raise ValueError(
                f"Expected stage {i} to be a non-empty list of class indices. "
                f"Received: stages={stages!r}"
            )
        if classes.dtype.kind not in "iu":
            raise TypeError(
                f"Expected stage {i} to hold integer class indices. "
                f"Received: {classes.tolist()!r}"
            )
        repeated = seen.intersection(classes.tolist())
        if repeated:
            raise ValueError(
                "Expected each class in one stage only. Received: classes "
                f"{sorted(repeated)} again in stage {i} of stages={stages!r}"
            )
        seen.update(classes.tolist())
        checked.append(classes.astype(np.int64))
    return checked


def _check_matrix(matrix):
    if not isinstance(matrix, np.ndarray):
        rows = list(matrix)
        if rows and all(
            np.ndim(row) == 1 and len(row) == i + 1
            for i, row in enumerate(rows)
        ):
            return accuracy_matrix(rows)
        try:
            matrix = np.array(rows, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                "Expected an accuracy matrix: a square array, or rows where "
                f"row i has i + 1 entries. Received: {rows!r}"
            ) from error
    matrix = np.asarray(matrix, dtype=np.float64)
    square = matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1]
    if not square or not matrix.size:
        raise ValueError(
            "Expected a square accuracy matrix (stages x stages). "
            f"Received: shape {matrix.shape}"
        )
    _check_range(matrix, "the accuracy matrix")
    return matrix


def _check_overall(overall, stages):
    values = np.array(overall, dtype=np.float64)
    if values.shape != (stages,):
        raise ValueError(
            f"Expected `overall` to hold one accuracy per stage ({stages}). "
            f"Received: overall={list(overall)!r}"
        )
    _check_range(values, "`overall`")
    return values


def _check_range(values, name):
    known = values[~np.isnan(values)]
    if np.any((known < 0) | (known > 1)):
        bad = known[(known < 0) | (known > 1)][0]
        raise ValueError(
            f"Expected accuracies in {name} to be fractions in [0, 1], not "
            f"percentages. Received: {float(bad)!r}"
        )


def _stage_accuracy(matrix, overall):
    matrix = _check_matrix(matrix)
    if overall is not None:
        return _check_overall(overall, len(matrix)).tolist()
    return [_mean(row) for row in matrix]


def _mean(values):
    known = values[~np.isnan(values)]
    if not known.size:
        return math.nan
    return float(np.mean(known))


def _fraction(correct):
    if not correct.size:
        return math.nan
    return float(np.mean(correct))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
