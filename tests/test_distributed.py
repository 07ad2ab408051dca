"""Staged runs under distribution: replicas stay equal, checkpoints restore.

Three stages of two digit classes each (the head grows from 0 to 6 units)
under `tf.distribute.MirroredStrategy` on two logical CPUs (in this
process), `tf.distribute.MultiWorkerMirroredStrategy` with two worker
processes on localhost, and JAX's `keras.distribution.DataParallel` over two
host devices (a process of its own). After each stage every variable of the
model and of its optimizer is equal on every replica; the checkpoint
restores on one device with the same predictions; the accuracy is that of
the same run on one device, within 2 points. The run itself is in
`distributed_run.py`.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from distributed_run import MEMORY_SIZE
from distributed_run import accuracy
from distributed_run import digits_stages
from distributed_run import new_model
from distributed_run import save_stages
from distributed_run import staged_run
from distributed_run import state_variables

import keras_incremental as ki

RUN = pathlib.Path(__file__).with_name("distributed_run.py")
ROOT = RUN.parents[1]
TIMEOUT = 300
# The most the distributed run's accuracy may differ from one device's.
TOLERANCE = 0.02

tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute runs on the TensorFlow backend only",
)


@pytest.fixture(scope="module")
def stages():
    return digits_stages()


@pytest.fixture(scope="module")
def stages_file(stages, tmp_path_factory):
    """The stages in a file: the processes need no scikit-learn import."""
    path = tmp_path_factory.mktemp("data") / "stages.npz"
    save_stages(path, stages)
    return path


@pytest.fixture(scope="module")
def single_device(stages):
    """The run on one TensorFlow device: `(accuracy, logits)`."""
    train, test = stages
    keras.utils.set_random_seed(0)
    model = new_model()
    inc = ki.IncrementalModel(memory_size=MEMORY_SIZE)
    staged_run(model, inc, train)
    return accuracy(model, inc, test)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_all(commands, logs, timeout=TIMEOUT):
    """Runs `(argv, env)` commands at once, each writing its output to its
    file of `logs`; returns their return codes and the outputs' ends. When
    one fails, the others (peers that would wait for it) are stopped."""
    children = []
    try:
        for (argv, env), log in zip(commands, logs, strict=True):
            with open(log, "w") as file:
                children.append(
                    subprocess.Popen(
                        argv,
                        env=env,
                        cwd=ROOT,
                        stdout=file,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + timeout
        while any(c.poll() is None for c in children):
            if time.monotonic() > deadline or any(
                c.poll() not in (None, 0) for c in children
            ):
                break
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
    return [c.returncode for c in children], [
        pathlib.Path(log).read_text(errors="replace")[-5000:] for log in logs
    ]


def _env(**values):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **values}
    return env


def _report(folder):
    with open(folder / "report.json") as file:
        return json.load(file)


def _load(path):
    return np.load(path, allow_pickle=False)


@tensorflow_only
def test_mirrored_strategy_stages(tmp_path, stages, single_device):
    import tensorflow as tf

    train, test = stages
    # Each MirroredStrategy's collective all-reduce numbers its instances
    # from the same start, and two in one process (this suite's) collide;
    # reducing through one device uses no collective ops.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"],
        cross_device_ops=tf.distribute.ReductionToOneDevice(),
    )
    assert strategy.num_replicas_in_sync == 2
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = new_model()
    path = tmp_path / "run.keras"
    inc = ki.IncrementalModel(memory_size=MEMORY_SIZE, checkpoint=path)

    def replicas_equal(index):
        assert model.get_layer("head").units == 2 * (index + 1)
        variables = state_variables(model)
        # Weights, the iteration counter and learning rate, 2 Adam slots
        # per weight: the head's slots grew with it.
        assert len(variables) == 4 + 2 + 2 * 4
        for variable in variables:
            value = variable.value
            assert isinstance(value, tf.distribute.DistributedValues), (
                f"{variable.path} lives on one device after stage {index}"
            )
            first, second = (np.array(v.numpy()) for v in value.values)
            np.testing.assert_array_equal(
                first, second, err_msg=f"{variable.path}, stage {index}"
            )

    staged_run(model, inc, train, replicas_equal)
    score, logits = accuracy(model, inc, test)

    restored, restored_inc = ki.IncrementalModel.restore(path)
    for variable in state_variables(restored):
        assert not isinstance(variable.value, tf.distribute.DistributedValues)
    restored_score, restored_logits = accuracy(restored, restored_inc, test)
    np.testing.assert_allclose(restored_logits, logits, rtol=1e-5, atol=1e-5)
    assert restored_score == score
    assert restored_inc.classes_ == inc.classes_
    assert restored_inc.stage_ == 3

    single_score, _ = single_device
    print(f"mirrored accuracy {score:.4f}, one device {single_score:.4f}")
    assert score > 0.8
    assert abs(score - single_score) <= TOLERANCE


@tensorflow_only
@pytest.mark.backend_independent
def test_multi_worker_mirrored_strategy_stages(
    tmp_path, stages, stages_file, single_device
):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    folders = [tmp_path / f"worker-{i}" for i in range(2)]
    commands = []
    for index, folder in enumerate(folders):
        config = {
            "cluster": cluster,
            "task": {"type": "worker", "index": index},
        }
        # Each worker its own checkpoint: worker 0 (the chief) writes the
        # run's, the other a copy nobody reads.
        commands.append(
            (
                [
                    sys.executable,
                    str(RUN),
                    "multi-worker",
                    str(folder),
                    f"--data={stages_file}",
                ],
                _env(KERAS_BACKEND="tensorflow", TF_CONFIG=json.dumps(config)),
            )
        )
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    codes, outputs = _run_all(commands, logs)
    for index, (code, output) in enumerate(zip(codes, outputs, strict=True)):
        assert code == 0, f"worker {index} (return code {code}):\n{output}"
    chief, worker = (_report(folder) for folder in folders)

    assert [chief["task"]["index"], worker["task"]["index"]] == [0, 1]
    assert chief["replicas_in_sync"] == worker["replicas_in_sync"] == 2
    assert len(chief["stages"]) == len(worker["stages"]) == 3
    for index, (mine, theirs) in enumerate(
        zip(chief["stages"], worker["stages"], strict=True)
    ):
        assert mine["units"] == theirs["units"] == 2 * (index + 1)
        assert mine["classes"] == theirs["classes"]
        assert len(mine["variables"]) == 4 + 2 + 2 * 4
        for a, b in zip(mine["variables"], theirs["variables"], strict=True):
            assert a["path"] == b["path"]
            assert a["distributed"] and b["distributed"], a["path"]
            assert len(set(a["local_copies"])) == 1, a["path"]
            assert a["local_copies"] == b["local_copies"], (
                f"{a['path']} differs between the workers after stage {index}"
            )
    logits = _load(folders[0] / "predictions.npy")
    np.testing.assert_allclose(
        _load(folders[1] / "predictions.npy"), logits, rtol=1e-5, atol=1e-5
    )
    assert worker["accuracy"] == chief["accuracy"]

    # The chief's checkpoint, on one device, is the model the workers had;
    # the other worker's holds the same.
    _, test = stages
    restored, restored_inc = ki.IncrementalModel.restore(chief["checkpoint"])
    restored_score, restored_logits = accuracy(restored, restored_inc, test)
    np.testing.assert_allclose(restored_logits, logits, rtol=1e-5, atol=1e-5)
    assert restored_score == chief["accuracy"]
    assert restored_inc.classes_ == chief["stages"][-1]["classes"]
    assert restored_inc.stage_ == 3
    other, other_inc = ki.IncrementalModel.restore(worker["checkpoint"])
    np.testing.assert_array_equal(
        accuracy(other, other_inc, test)[1], restored_logits
    )

    single_score, _ = single_device
    score = chief["accuracy"]
    print(f"multi-worker accuracy {score:.4f}, one device {single_score:.4f}")
    assert score > 0.8
    assert abs(score - single_score) <= TOLERANCE


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="keras.distribution: JAX only"
)
def test_jax_data_parallel_in_process(tmp_path, stages):
    """The staged run under `DataParallel` over this process's devices (one,
    in the suite: what fails there fails on more devices too), then
    restored on one device without the distribution."""
    train, test = stages
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    try:
        keras.utils.set_random_seed(0)
        model = new_model()
        path = tmp_path / "run.keras"
        inc = ki.IncrementalModel(memory_size=MEMORY_SIZE, checkpoint=path)

        def replicated(index):
            assert model.get_layer("head").units == 2 * (index + 1)
            for variable in state_variables(model):
                shards = variable.value.addressable_shards
                assert len(shards) == len(devices), variable.path
                for shard in shards:
                    assert shard.data.shape == variable.shape, variable.path

        staged_run(model, inc, train, replicated)
        score, logits = accuracy(model, inc, test)
    finally:
        keras.distribution.set_distribution(None)
    restored, restored_inc = ki.IncrementalModel.restore(path)
    restored_score, restored_logits = accuracy(restored, restored_inc, test)
    np.testing.assert_allclose(restored_logits, logits, rtol=1e-5, atol=1e-5)
    assert restored_score == score
    assert restored_inc.classes_ == inc.classes_
    assert score > 0.8


@pytest.mark.backend_independent
def test_jax_data_parallel_stages(tmp_path, stages_file):
    flags = os.environ.get("XLA_FLAGS", "")
    env = _env(
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=2".strip(),
    )
    codes, outputs = _run_all(
        [
            (
                [
                    sys.executable,
                    str(RUN),
                    "data-parallel",
                    str(tmp_path),
                    f"--data={stages_file}",
                ],
                env,
            )
        ],
        [tmp_path / "data-parallel.log"],
    )
    assert codes == [0], outputs[0]
    report = _report(tmp_path)

    assert report["backend"] == "jax"
    assert report["devices"] == ["cpu:0", "cpu:1"]
    assert len(report["stages"]) == 3
    for index, stage in enumerate(report["stages"]):
        assert stage["units"] == 2 * (index + 1)
        # Body and head kernels and biases, the head's `active_units` (its
        # spare capacity on JAX), Adam's iteration and learning rate, and
        # two moments per kernel and bias.
        assert len(stage["variables"]) == 4 + 1 + 2 + 2 * 4
        for variable in stage["variables"]:
            where = f"{variable['path']} after stage {index}"
            assert variable["devices"] == ["cpu:0", "cpu:1"], where
            assert variable["whole"], where
            assert variable["equal"], where

    restored = report["restored"]
    assert restored["devices"] == ["cpu:0"]
    assert restored["stage"] == 3
    assert restored["classes"] == report["stages"][-1]["classes"]
    logits = _load(tmp_path / "predictions.npy")
    np.testing.assert_allclose(
        _load(tmp_path / "restored.npy"), logits, rtol=1e-5, atol=1e-5
    )
    assert restored["accuracy"] == report["accuracy"]

    single = report["single"]
    assert single["devices"] == ["cpu:0"]
    score, single_score = report["accuracy"], single["accuracy"]
    print(f"data-parallel accuracy {score:.4f}, one device {single_score:.4f}")
    assert score > 0.8
    assert abs(score - single_score) <= TOLERANCE
