"""The benchmark command: protocol, table and JSON."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_incremental import cli
from keras_incremental.bench import adoption
from keras_incremental.bench import command
from keras_incremental.bench import data
from keras_incremental.bench import protocol
from keras_incremental.bench import threads

CPUS = len(threads.available_cpus())

# A short schedule for the adopt scenario's tests (the CLI's is 15/5/15).
SHORT_ADOPT = {
    "source_epochs": 3,
    "epochs": 2,
    "joint_epochs": 4,
    "batch_size": 32,
}


@pytest.mark.end_to_end
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
    # Run in this process: its backend, the backend's own thread pools.
    assert report["arguments"]["backend"] == keras.backend.backend()
    assert report["arguments"]["threads"] is None
    assert report["arguments"]["cpus"] == CPUS
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
        (["--scenario", "sideways"], "invalid choice"),
        (
            ["--scenario", "transfer", "--strategy", "rebuild"],
            "unknown method 'rebuild' for --scenario transfer",
        ),
        (["--width", "0"], "--width must be >= 1"),
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
        (["--backend", "theano"], "argument --backend: invalid choice"),
        (["--threads", "0"], "--threads must be a positive integer"),
        (["--threads", "-2"], "--threads must be a positive integer"),
        (["--threads", "two"], "argument --threads: invalid int value"),
        (["--threads", str(CPUS + 1)], f"--threads must be at most {CPUS}"),
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


def test_protocol_analytic_forgets_nothing_and_keeps_no_exemplar():
    """The analytic head on random features of digits: final accuracy above
    the gradient default's, forgetting under a point (a small width: the
    numbers at the default width are in benchmarks/RESULTS.md)."""
    result = protocol.run("analytic", data.load("digits"), seed=0, width=512)
    assert result["final_accuracy"] > 0.97
    assert result["forgetting"] < 0.01
    result = protocol.run(
        protocol.ANALYTIC_MLP, data.load("digits"), seed=0, epochs=2
    )
    assert result["final_accuracy"] > 0.85


@pytest.mark.end_to_end
def test_transfer_scenario_analytic_equals_the_joint_linear_probe(capsys):
    report = command.run(
        command.check_arguments(
            command.parser().parse_args(
                [
                    "--scenario",
                    "transfer",
                    "--seeds",
                    "0",
                    "--strategy",
                    "analytic",
                    "linear-probe",
                    "joint-finetune",
                ]
            ),
            pytest.fail,
        )
    )
    methods = report["methods"]
    analytic = methods["analytic"]["final_accuracy"]
    assert abs(analytic - methods["linear-probe"]["final_accuracy"]) <= 0.001
    assert analytic > 0.9
    assert len(methods["analytic"]["accuracy_matrix"]) == 5
    assert report["arguments"]["new_classes"] == [5, 6, 7, 8, 9]
    assert "| linear-probe |" in command.table(report)


def test_a_split_of_your_own(tmp_path):
    x_train, y_train, x_test, y_test = data.load("digits")
    path = tmp_path / "split.npz"
    np.savez(
        path, X_train=x_train, y_train=y_train, X_test=x_test, y_test=y_test
    )
    loaded = data.load_split(path)
    for a, b in zip(loaded, (x_train, y_train, x_test, y_test), strict=True):
        np.testing.assert_array_equal(a, b)
    np.savez(path, X_train=x_train, y_train=y_train, X_test=x_test)
    with pytest.raises(ValueError, match=r"lacks \['y_test'\]"):
        data.load_split(path)
    np.savez(
        path,
        X_train=x_train,
        y_train=y_train + 10,
        X_test=x_test,
        y_test=y_test,
    )
    with pytest.raises(ValueError, match="classes 0..9"):
        data.load_split(path)
    np.savez(
        path,
        X_train=x_train.astype(object),
        y_train=y_train,
        X_test=x_test,
        y_test=y_test,
    )
    with pytest.raises(ValueError, match="Object arrays cannot be loaded"):
        data.load_split(path)


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
    assert protocol_arguments.width == protocol.DEFAULT_WIDTH
    transfer_arguments = parsed(["--scenario", "transfer"])
    assert transfer_arguments.strategy == [
        "analytic",
        "default",
        "joint-finetune",
        "linear-probe",
    ]
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


@pytest.mark.end_to_end
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
    # TensorFlow's AutoGraph writes the code it converts to the temporary
    # folder too (removed at exit): not the benchmark's.
    left = [
        path
        for path in scratch.iterdir()
        if not path.name.startswith("__autograph_generated_file")
    ]
    assert not os.path.exists(saved[0]) and not left, left
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
    assert arguments["backend"] == keras.backend.backend()
    assert arguments["threads"] is None
    printed = capsys.readouterr().out
    for name in ("default", "rebuild", "joint"):
        assert f"| {name} |" in printed
    assert "old acc. (0-7)" in printed and "targets" in printed


@pytest.mark.end_to_end
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


def _other_backend():
    # PyTorch when it is not this process's backend, TensorFlow otherwise:
    # the cheapest backends to start for a short run.
    return "torch" if keras.backend.backend() != "torch" else "tensorflow"


def test_child_environment_pins_every_backend():
    before = {
        "PATH": "/usr/bin",
        "KERAS_BACKEND": "tensorflow",
        "OMP_NUM_THREADS": "8",
        "XLA_FLAGS": (
            "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=true "
            "intra_op_parallelism_threads=8"
        ),
    }
    copy = dict(before)
    env = threads.child_environment("jax", 1, environ=before)
    assert before == copy  # not changed
    assert env["PATH"] == "/usr/bin"
    assert env["KERAS_BACKEND"] == "jax"
    for name in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
    ):
        assert env[name] == "1", name
    assert env["TF_NUM_INTEROP_THREADS"] == "1"
    # Other XLA flags kept, the thread flags replaced.
    assert env["XLA_FLAGS"].split() == [
        "--xla_dump_to=/tmp/x",
        "--xla_cpu_multi_thread_eigen=false",
        "intra_op_parallelism_threads=1",
    ]
    assert env[threads.CHILD_VARIABLE] == "1"
    assert not threads.needs_child("jax", 1, "jax", env)
    assert threads.needs_child("jax", 1, "jax", before)
    assert threads.needs_child("torch", None, "jax", env)

    env = threads.child_environment(
        "torch", CPUS, environ={"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    )
    assert env["KERAS_BACKEND"] == "torch"
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == str(CPUS)
    assert env["TF_NUM_INTEROP_THREADS"] == "1"
    assert env["XLA_FLAGS"] == (
        "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=false "
        f"intra_op_parallelism_threads={CPUS}"
    )

    # Without threads, only the backend: the thread settings are kept.
    env = threads.child_environment("torch", environ=before)
    assert env["KERAS_BACKEND"] == "torch"
    assert env["OMP_NUM_THREADS"] == "8"
    assert env["XLA_FLAGS"] == before["XLA_FLAGS"]
    assert "TF_NUM_INTEROP_THREADS" not in env
    assert env[threads.CHILD_VARIABLE] == threads.DEFAULT_THREADS
    assert threads.is_child(env) and not threads.is_child({})
    assert not threads.needs_child("torch", None, "torch", env)
    assert not threads.needs_child("torch", None, "torch", {})


@pytest.mark.parametrize(
    "backend, threads_, message",
    [
        ("theano", None, "expected one of tensorflow, jax, torch"),
        ("jax", 0, "expected a positive integer. Received: threads=0"),
        ("jax", 1.5, "expected a positive integer. Received: threads=1.5"),
        ("jax", CPUS + 1, f"expected at most {CPUS}"),
    ],
)
def test_child_environment_bad_arguments(backend, threads_, message):
    with pytest.raises(ValueError, match="Received an invalid value") as e:
        threads.child_environment(backend, threads_, environ={})
    assert message in str(e.value)


def test_bench_starts_a_child_for_backend_and_threads(monkeypatch):
    monkeypatch.delenv(threads.CHILD_VARIABLE, raising=False)
    started = []

    def fake_run(command_line, env):
        started.append((command_line, env))
        return subprocess.CompletedProcess(command_line, 3)

    monkeypatch.setattr(command.subprocess, "run", fake_run)
    other = _other_backend()
    argv = ["--backend", other, "--threads", "1", "--seeds", "0"]
    assert command.main(argv) == 3  # the child's exit code
    [(command_line, env)] = started
    assert command_line == [
        sys.executable,
        "-m",
        "keras_incremental.bench",
        *argv,
    ]
    assert env["KERAS_BACKEND"] == other
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "1"
    assert env[threads.CHILD_VARIABLE] == "1"
    # Threads on this process's backend: a child too, its pools are sized
    # at the start.
    current = keras.backend.backend()
    assert command.main(["--backend", current, "--threads", "1"]) == 3
    assert started[-1][1]["KERAS_BACKEND"] == current
    # Another backend, default threads: the thread settings are inherited.
    assert command.main(["--backend", other]) == 3
    assert started[-1][1][threads.CHILD_VARIABLE] == threads.DEFAULT_THREADS
    assert len(started) == 3


def test_bench_child_does_not_start_another(monkeypatch, capsys):
    monkeypatch.setenv(threads.CHILD_VARIABLE, threads.DEFAULT_THREADS)
    monkeypatch.setattr(command.subprocess, "run", None)  # never called
    with pytest.raises(SystemExit) as raised:
        command.main(["--backend", _other_backend()])
    assert raised.value.code == 2
    assert "does not start another" in capsys.readouterr().err


def test_bench_help_shows_backend_and_threads(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["bench", "-h"])
    assert raised.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: keras-incremental bench" in text
    assert "--backend {tensorflow,jax,torch}" in text
    assert "Keras backend to run on" in text
    assert "--threads N" in text
    assert "Pin every backend to N compute threads" in text


@pytest.mark.end_to_end
def test_bench_on_another_backend_end_to_end(tmp_path, capfd):
    other = _other_backend()
    path = tmp_path / "other.json"
    status = command.main(
        [
            "--backend",
            other,
            "--threads",
            "1",
            "--strategy",
            "rebuild",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--memory-size",
            "20",
            "--json",
            str(path),
        ]
    )
    printed = capfd.readouterr().out
    assert status == 0, printed
    report = json.loads(path.read_text())
    arguments = report["arguments"]
    assert arguments["backend"] == other
    assert arguments["threads"] == 1
    assert arguments["cpus"] == 1  # the child's affinity: one CPU
    assert arguments["strategy"] == ["rebuild"]
    assert 0.0 < report["final_accuracy"] <= 1.0
    assert f"backend {other}, 1 thread(s)" in printed
    assert "| rebuild |" in printed
