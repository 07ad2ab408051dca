import builtins
import json
import math

import numpy as np
import pytest

from keras_incremental import metrics

pytestmark = pytest.mark.backend_independent

# Three stages; the best accuracy on each earlier stage is on the diagonal.
ROWS = [[1.0], [0.8, 0.9], [0.6, 0.7, 0.95]]


def test_accuracy_matrix_is_square_with_nan_above_the_diagonal():
    matrix = metrics.accuracy_matrix(ROWS)
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(
        matrix,
        [[1.0, np.nan, np.nan], [0.8, 0.9, np.nan], [0.6, 0.7, 0.95]],
    )


def test_metrics_of_a_three_stage_run():
    matrix = metrics.accuracy_matrix(ROWS)
    # forgetting: stage 0: max(1.0, 0.8) - 0.6 = 0.4
    #             stage 1: max(0.9) - 0.7 = 0.2      -> mean 0.3
    assert metrics.forgetting(matrix) == pytest.approx(0.3)
    # BWT: (0.6 - 1.0) = -0.4, (0.7 - 0.9) = -0.2   -> mean -0.3
    assert metrics.backward_transfer(matrix) == pytest.approx(-0.3)
    # final: mean(0.6, 0.7, 0.95) = 2.25 / 3 = 0.75
    assert metrics.final_accuracy(matrix) == pytest.approx(0.75)
    # AIA: row means 1.0, (0.8 + 0.9) / 2 = 0.85, 0.75 -> 2.6 / 3
    assert metrics.average_incremental_accuracy(matrix) == pytest.approx(
        2.6 / 3
    )


def test_overall_accuracies_take_precedence_over_row_means():
    matrix = metrics.accuracy_matrix(ROWS)
    overall = [1.0, 0.84, 0.70]
    # final: overall[-1] = 0.70 (not the row mean 0.75)
    assert metrics.final_accuracy(matrix, overall) == pytest.approx(0.70)
    # AIA: (1.0 + 0.84 + 0.70) / 3 = 2.54 / 3
    assert metrics.average_incremental_accuracy(
        matrix, overall
    ) == pytest.approx(2.54 / 3)


def test_forgetting_uses_the_best_accuracy_not_the_diagonal():
    # Stage 0's classes got better while stage 1 trained: A[1, 0] > A[0, 0].
    matrix = metrics.accuracy_matrix([[0.7], [0.9, 0.8], [0.5, 0.6, 0.9]])
    # forgetting: stage 0: max(0.7, 0.9) - 0.5 = 0.4
    #             stage 1: max(0.8) - 0.6 = 0.2      -> mean 0.3
    assert metrics.forgetting(matrix) == pytest.approx(0.3)
    # BWT uses the diagonal: (0.5 - 0.7) = -0.2, (0.6 - 0.8) = -0.2 -> -0.2
    assert metrics.backward_transfer(matrix) == pytest.approx(-0.2)


def test_single_stage():
    matrix = metrics.accuracy_matrix([[0.9]])
    assert metrics.forgetting(matrix) == 0.0
    assert metrics.backward_transfer(matrix) == 0.0
    assert metrics.final_accuracy(matrix) == pytest.approx(0.9)
    assert metrics.average_incremental_accuracy(matrix) == pytest.approx(0.9)


def test_metrics_accept_rows_and_a_square_list():
    square = [[1.0, None, None], [0.8, 0.9, None], [0.6, 0.7, 0.95]]
    assert metrics.forgetting(ROWS) == pytest.approx(0.3)
    assert metrics.forgetting(square) == pytest.approx(0.3)


def test_a_stage_without_test_samples_is_left_out_of_the_means():
    # Stage 1 had no test samples: its column is nan.
    matrix = metrics.accuracy_matrix([[1.0], [0.9, None], [0.7, None, 0.6]])
    # forgetting: stage 0: max(1.0, 0.9) - 0.7 = 0.3; stage 1 left out
    assert metrics.forgetting(matrix) == pytest.approx(0.3)
    # BWT: 0.7 - 1.0 = -0.3; stage 1 left out
    assert metrics.backward_transfer(matrix) == pytest.approx(-0.3)
    # final: mean(0.7, 0.6) = 0.65
    assert metrics.final_accuracy(matrix) == pytest.approx(0.65)


def test_stage_accuracies_ignores_classes_of_no_stage():
    y_true = [0, 0, 1, 1, 2, 2, 3, 7]
    y_pred = [0, 1, 1, 1, 2, 0, 3, 7]
    row, overall = metrics.stage_accuracies(y_true, y_pred, [[0, 1], [2, 3]])
    # stage 0 (classes 0, 1): samples 0..3, right: 0, 2, 3 -> 3 / 4
    # stage 1 (classes 2, 3): samples 4..6, right: 4, 6    -> 2 / 3
    # class 7 (sample 7) is in no stage and is ignored     -> overall 5 / 7
    assert row == pytest.approx([0.75, 2 / 3])
    assert overall == pytest.approx(5 / 7)
    assert all(type(value) is float for value in [*row, overall])


def test_stage_accuracies_nan_for_a_stage_without_samples():
    row, overall = metrics.stage_accuracies(
        np.array([0, 1, 1]), np.array([0, 0, 1]), [[0, 1], [5]]
    )
    # stage 0: samples 0..2, right: 0, 2 -> 2 / 3; class 5 has no samples
    assert row[0] == pytest.approx(2 / 3)
    assert math.isnan(row[1])
    assert overall == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "y_true, y_pred, stages, received",
    [
        ([0, 1, 1], [0, 1], [[0, 1]], "len(y_true)=3, len(y_pred)=2"),
        ([[0, 1], [1, 0]], [0, 1], [[0, 1]], "shape (2, 2)"),
        ([0, 1], [0, 1], [], "stages=[]"),
        ([0, 1], [0, 1], [[0], []], "stages=[[0], []]"),
        ([0, 1], [0, 1], [[0, 1], [1]], "classes [1] again in stage 1"),
    ],
)
def test_stage_accuracies_rejects_bad_input(y_true, y_pred, stages, received):
    with pytest.raises(ValueError, match="Expected") as info:
        metrics.stage_accuracies(y_true, y_pred, stages)
    assert received in str(info.value)


def test_stage_accuracies_rejects_non_integer_labels():
    with pytest.raises(TypeError, match="float64"):
        metrics.stage_accuracies([0.0, 1.0], [0, 1], [[0, 1]])


def test_accuracy_matrix_rejects_a_non_triangular_row():
    with pytest.raises(ValueError, match="row 1 to hold 2") as info:
        metrics.accuracy_matrix([[1.0], [0.8]])
    assert "Received: [0.8]" in str(info.value)
    with pytest.raises(ValueError, match=r"rows=\[\]"):
        metrics.accuracy_matrix([])


def test_percentages_are_rejected():
    with pytest.raises(ValueError, match="Received: 85.0"):
        metrics.accuracy_matrix([[1.0], [0.8, 85.0]])
    with pytest.raises(ValueError, match="Received: 84.0"):
        metrics.final_accuracy(ROWS, [1.0, 84.0, 0.7])


def test_overall_of_the_wrong_length_is_rejected():
    with pytest.raises(ValueError, match=r"overall=\[1.0, 0.8\]"):
        metrics.final_accuracy(ROWS, [1.0, 0.8])


def test_summarize_is_json_able_with_plain_floats():
    summary = metrics.summarize(metrics.accuracy_matrix(ROWS))
    assert summary["accuracy_matrix"] == [
        [1.0, None, None],
        [0.8, 0.9, None],
        [0.6, 0.7, 0.95],
    ]
    assert summary["final_accuracy"] == pytest.approx(0.75)
    assert summary["average_incremental_accuracy"] == pytest.approx(2.6 / 3)
    assert summary["forgetting"] == pytest.approx(0.3)
    assert summary["backward_transfer"] == pytest.approx(-0.3)
    # row means: 1.0, (0.8 + 0.9) / 2, (0.6 + 0.7 + 0.95) / 3
    assert summary["stage_accuracy"] == pytest.approx([1.0, 0.85, 0.75])
    for key in summary:
        if key not in ("accuracy_matrix", "stage_accuracy"):
            assert type(summary[key]) is float, key
    assert all(type(value) is float for value in summary["stage_accuracy"])
    json.dumps(summary, allow_nan=False)


def test_summarize_uses_overall_for_stage_accuracy():
    summary = metrics.summarize(ROWS, overall=[1.0, 0.84, 0.70])
    assert summary["stage_accuracy"] == pytest.approx([1.0, 0.84, 0.70])
    assert summary["final_accuracy"] == pytest.approx(0.70)


def test_write_report_round_trip_nan_becomes_null(tmp_path):
    folder = tmp_path / "made" / "here"
    report = {
        "final_accuracy": np.float32(0.5),
        "forgetting": math.nan,
        "nested": {"values": [1.0, float("nan")]},
        "array": np.array([0.25, np.nan]),
    }
    path = metrics.write_report(report, folder / "report.json")
    assert path == str(folder / "report.json")
    text = (folder / "report.json").read_text()
    assert "NaN" not in text
    assert json.loads(text) == {
        "final_accuracy": 0.5,
        "forgetting": None,
        "nested": {"values": [1.0, None]},
        "array": [0.25, None],
    }
    assert sorted(p.name for p in folder.iterdir()) == ["report.json"]


def test_write_report_failure_keeps_the_old_report(tmp_path):
    path = metrics.write_report({"forgetting": 0.1}, tmp_path / "report.json")
    with pytest.raises(TypeError):
        metrics.write_report({"model": object()}, path)
    assert json.loads((tmp_path / "report.json").read_text()) == {
        "forgetting": 0.1
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_plot_accuracy_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    folder = tmp_path / "plots"
    path = metrics.plot_accuracy(
        {"fine-tune": [1.0, 0.5, 0.33], "replay": [1.0, 0.9, 0.85]},
        folder / "accuracy.png",
        title="digits",
    )
    assert path == str(folder / "accuracy.png")
    data = (folder / "accuracy.png").read_bytes()
    assert data.startswith(b"\x89PNG")
    assert len(data) > 1000
    assert sorted(p.name for p in folder.iterdir()) == ["accuracy.png"]


def test_plot_accuracy_rejects_percentages(tmp_path):
    with pytest.raises(ValueError, match="Received: 90.0"):
        metrics.plot_accuracy({"replay": [90.0, 80.0]}, tmp_path / "a.png")


def test_plot_accuracy_without_matplotlib(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        metrics.plot_accuracy({"replay": [1.0, 0.9]}, tmp_path / "a.png")
    assert not list(tmp_path.iterdir())
