"""The benchmark command: protocol, table and JSON."""

import json
import subprocess
import sys

import pytest

from keras_incremental import cli
from keras_incremental.bench import command
from keras_incremental.bench import data
from keras_incremental.bench import protocol


def test_bench_json_has_the_contract_keys(tmp_path, capsys):
    path = tmp_path / "out" / "bench.json"
    status = command.main(
        [
            "--dataset",
            "digits",
            "--strategy",
            "replay",
            "rebuild",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--order",
            *"9 8 7 6 5 4 3 2 1 0".split(),
            "--json",
            str(path),
        ]
    )
    assert status == 0
    report = json.loads(path.read_text())
    for key in (
        "final_accuracy",
        "average_incremental_accuracy",
        "forgetting",
        "accuracy_matrix",
        "seconds",
        "peak_rss_mb",
        "arguments",
    ):
        assert key in report, key
    assert report["method"] == "replay"
    assert set(report["methods"]) == {"replay", "rebuild"}
    assert report["arguments"]["order"] == list(range(9, -1, -1))
    assert report["arguments"]["seeds"] == [0]
    matrix = report["accuracy_matrix"]
    assert len(matrix) == 5 and [len(r) for r in matrix] == [5] * 5
    assert matrix[0][1] is None  # above the diagonal
    assert 0.3 < report["final_accuracy"] <= 1.0
    assert report["seconds"] > 0 and report["peak_rss_mb"] > 100
    assert report["seconds_vs_rebuild"] > 0
    printed = capsys.readouterr().out
    assert "| replay |" in printed and "| rebuild |" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--strategy", "sgd"], "unknown method 'sgd'"),
        (["--order", "0", "1", "2"], "permutation"),
        (["--memory-size", "-1"], "--memory-size must be >= 0"),
        (["--dataset", "cifar"], "invalid choice"),
    ],
)
def test_bench_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        command.main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_protocol_stages_and_rebuild_reference():
    assert protocol.split_stages(range(10)) == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
        [8, 9],
    ]
    x_train, y_train, x_test, y_test = data.load("digits")
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert x_train.max() == 1.0
    # Stratified: every class in the test split, in proportion.
    counts = [int((y_test == c).sum()) for c in range(10)]
    assert min(counts) >= 35


def test_console_entry_points():
    assert cli.main([]) == 2
    assert cli.main(["nonsense"]) == 2
    result = subprocess.run(
        [sys.executable, "-m", "keras_incremental.bench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "--memory-size" in result.stdout
