"""The benchmark command: protocol, table and JSON."""

import json
import os
import subprocess
import sys

import pytest

from keras_incremental import cli
from keras_incremental.bench import adoption
from keras_incremental.bench import command
from keras_incremental.bench import data
from keras_incremental.bench import protocol

# A short schedule for the adopt scenario's tests (the CLI's is 15/5/15).
SHORT_ADOPT = {
    "source_epochs": 3,
    "epochs": 2,
    "joint_epochs": 4,
    "batch_size": 32,
}


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
        (["--scenario", "transfer"], "invalid choice"),
        (
            ["--scenario", "adopt", "--order", *"9 8 7 6 5 4 3 2 1 0".split()],
            "--order applies to --scenario protocol only",
        ),
        (
            ["--scenario", "adopt", "--epochs", "5"],
            "--epochs applies to --scenario protocol only",
        ),
        (["--scenario", "adopt", "--strategy", "sgd"], "unknown method"),
        (["--scenario", "adopt", "--memory-size", "-5"], "must be >= 0"),
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
    # The help describes both scenarios itself.
    text = " ".join(result.stdout.split())
    assert "DESIGN.md" not in text
    assert "--scenario adopt" in text and "--scenario protocol" in text
    assert "five stages of two classes" in text
    assert "at least 2 points above rebuild" in text
    assert "within 3 points of joint" in text
    assert "at most 2 points below rebuild" in text


def test_scenario_defaults():
    argument_parser = command.parser()

    def parsed(argv):
        return command.check_arguments(
            argument_parser.parse_args(argv), argument_parser.error
        )

    protocol_arguments = parsed([])
    assert protocol_arguments.scenario == "protocol"
    assert protocol_arguments.strategy == ["default"]
    assert protocol_arguments.order == list(range(10))
    assert protocol_arguments.epochs == 5
    assert protocol_arguments.memory_size == 200
    adopt_arguments = parsed(["--scenario", "adopt", "--dataset", "mnist5k"])
    assert adopt_arguments.strategy == ["default", "rebuild", "joint"]
    assert adopt_arguments.memory_size == 200
    assert command.ADOPT_SCHEDULE == {
        "source_epochs": 15,
        "epochs": 5,
        "joint_epochs": 15,
        "batch_size": 32,
    }


def test_adopt_bad_arguments_through_the_console_script(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["bench", "--scenario", "adopt", "--epochs", "2"])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: keras-incremental bench")
    assert "--epochs applies to --scenario protocol only" in error


def test_adopt_scenario_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(command, "ADOPT_SCHEDULE", SHORT_ADOPT)
    # The source's temporary folder goes under a folder of the test's own.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    saved = []
    train_source = adoption.train_source

    def recording(data, seed, path, **kwargs):
        result = train_source(data, seed, path, **kwargs)
        saved.append(path)
        assert path.endswith(".keras") and os.path.isfile(path)
        return result

    monkeypatch.setattr(adoption, "train_source", recording)
    path = tmp_path / "out" / "adopt.json"
    status = command.main(
        ["--scenario", "adopt", "--seeds", "0", "--json", str(path)]
    )
    assert status == 0
    # One source for all methods of the seed, removed afterwards.
    assert len(saved) == 1 and str(scratch) in saved[0]
    assert not os.path.exists(saved[0]) and not list(scratch.iterdir())
    report = json.loads(path.read_text())
    assert report["scenario"] == "adopt"
    assert list(report["methods"]) == ["default", "rebuild", "joint"]
    keys = ("old_accuracy", "new_accuracy", "all_accuracy", "seconds")
    for name, method in report["methods"].items():
        assert [run["seed"] for run in method["runs"]] == [0], name
        for key in keys:
            assert key in method and key in method["runs"][0], (name, key)
            assert method[key] == method["runs"][0][key]
        for key in keys[:3]:
            assert 0.0 <= method[key] <= 1.0, (name, key)
        assert method["seconds"] > 0
        old, new = method["old_accuracy"], method["new_accuracy"]
        # Stratified test split: 36 samples of each class but 37 of 3 ones.
        assert min(old, new) <= method["all_accuracy"] <= max(old, new)
    joint = report["methods"]["joint"]
    assert joint["all_accuracy"] > 0.6  # chance is 0.1
    assert joint["new_accuracy"] > 0.5
    default = report["methods"]["default"]
    assert default["new_accuracy"] > 0.5  # it learned the new classes
    assert report["source"]["old_accuracy"] > 0.6
    assert set(report["targets"]) == {"default"}
    assert set(report["targets"]["default"]) == {
        "all_vs_rebuild",
        "all_vs_joint",
        "new_vs_rebuild",
        "met",
    }
    arguments = report["arguments"]
    assert arguments["scenario"] == "adopt"
    assert arguments["dataset"] == "digits"
    assert arguments["seeds"] == [0]
    assert arguments["memory_size"] == 200
    assert arguments["epochs"] == 2 and arguments["source_epochs"] == 3
    assert "order" not in arguments
    printed = capsys.readouterr().out
    for name in ("default", "rebuild", "joint"):
        assert f"| {name} |" in printed
    assert "old acc. (0-7)" in printed and "targets" in printed


def test_adopt_scenario_is_deterministic_per_seed(tmp_path):
    dataset = data.load("digits")
    source = str(tmp_path / "source.keras")
    adoption.train_source(dataset, 1, source, epochs=1)
    first, second = (
        adoption.run_method("default", dataset, source, 1, epochs=1)
        for _ in range(2)
    )
    for key in ("old_accuracy", "new_accuracy", "all_accuracy"):
        assert first[key] == second[key], key


def test_adopt_targets():
    def scored(old, new, everything):
        return {
            "old_accuracy": old,
            "new_accuracy": new,
            "all_accuracy": everything,
        }

    methods = {
        "default": scored(0.95, 0.90, 0.94),
        "replay": scored(0.80, 0.99, 0.84),
        "rebuild": scored(0.85, 0.91, 0.86),
        "joint": scored(0.97, 0.95, 0.965),
    }
    gaps = adoption.targets(methods)
    assert set(gaps) == {"default", "replay"}
    assert gaps["default"]["all_vs_rebuild"] == pytest.approx(8.0)
    assert gaps["default"]["all_vs_joint"] == pytest.approx(-2.5)
    assert gaps["default"]["new_vs_rebuild"] == pytest.approx(-1.0)
    assert gaps["default"]["met"]
    assert not gaps["replay"]["met"]  # all-class -2 points vs rebuild
    assert adoption.targets({"default": methods["default"]}) == {}
