"""Fault injection: a run killed at any point of a stage, or stopped by a
full disk, restores to its last complete stage and ends like a run never
stopped.

The run under test: scikit-learn's digits (stratified 80/20 split), three
stages of classes, a small MLP, the default strategy with an exemplar memory,
a checkpoint after each stage, and `keras.utils.set_random_seed` before each
stage's `fit`, so that a run continued after a restore trains its stages
from the same seeds as a run never killed.

Each kill is a process of its own, which installs its own hook: the hook
prints a marker line and sends the process SIGKILL, so nothing of Python's
cleanup (no `finally`, no `atexit`) runs. To import TensorFlow once rather
than four times, one child (this file, imported by a short script) forks
the four killed runs before TensorFlow has run anything; they start with
the first test that needs one and run while this process trains the run
never killed.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import traceback
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import compiled_mlp
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_incremental as ki

# What these tests check (files on disk after a kill) does not depend on the
# backend, and their child forks after importing it, which JAX and PyTorch
# do not support: they run once, on TensorFlow.
from keras_incremental.saving.checkpoint import STATE_ENTRY

pytestmark = pytest.mark.backend_independent

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
NAMES = np.array(
    ["zero", "one", "two", "three", "four"]
    + ["five", "six", "seven", "eight", "nine"]
)
STAGES = (NAMES[0:4], NAMES[4:7], NAMES[7:10])
EPOCHS = 3
MEMORY = 60
KILL_POINTS = ("fit", "memory", "checkpoint", "export")
CHECKPOINT = os.path.join("checkpoints", "stages.keras")
SERVING = "serving"
# How long a child may take: importing TensorFlow and two short stages,
# four children at once on two busy cores.
CHILD_TIMEOUT = 300

CHILD = textwrap.dedent(
    """
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import test_faults
    test_faults.child_main(sys.argv[1], sys.argv[2:])
    """
)


# The run, shared by the parent and the children.


def digits():
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = NAMES[data.target]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    return x_train, y_train, x_test, y_test


def start(split, folder, export_dir=None):
    keras.utils.set_random_seed(0)
    model = compiled_mlp(units=0, features=64, hidden=32)
    inc = ki.IncrementalModel(
        memory_size=MEMORY,
        checkpoint=os.path.join(folder, CHECKPOINT),
        seed=0,
        evaluation=split[2:],
        export_dir=export_dir,
    )
    return model, inc


def train_stage(model, inc, split, index, callbacks=()):
    """Stage `index` (0-based): the same seed in every run."""
    x, y = split[:2]
    mask = np.isin(y, STAGES[index])
    keras.utils.set_random_seed(100 + index)
    xs, ys = inc.prepare(x[mask], y[mask])
    model.fit(
        xs,
        ys,
        epochs=EPOCHS,
        batch_size=32,
        verbose=0,
        callbacks=[inc, *callbacks],
    )


def accuracy(inc, split):
    x_test, y_test = split[2:]
    predicted = np.asarray(inc.decode(inc.predict(x_test)))
    return float(np.mean(predicted == y_test))


def restore(split, path, **options):
    return ki.IncrementalModel.restore(
        str(path), evaluation=split[2:], **options
    )


def partial_files(*folders):
    """The writers' temporary files and folders left in `folders`."""
    return sorted(
        os.path.join(folder, name)
        for folder in folders
        if os.path.isdir(folder)
        for name in os.listdir(folder)
        if name.startswith(".partial-")
    )


def committed(reference, stages):
    """The class names a run knows after `stages` stages, in index order."""
    return reference["classes"][: sum(len(s) for s in STAGES[:stages])]


# The children.


def die(point):
    print(f"KILLED {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            die("fit")


def install_kill(point):
    """Has the child kill itself at `point` of the next stage."""
    if point == "fit":
        return [KillAtSecondEpoch()]
    if point == "memory":
        from keras_incremental.memory import ExemplarMemory

        def update(memory, *args, **kwargs):
            die("memory")

        ExemplarMemory.update = update
    elif point == "checkpoint":
        writestr = zipfile.ZipFile.writestr

        def stall(archive, name, *args, **kwargs):
            # The package's own entries go in after `model.save` wrote the
            # model into the temporary file.
            entry = getattr(name, "filename", name)
            if entry.startswith("keras_incremental/"):
                die("checkpoint")
            return writestr(archive, name, *args, **kwargs)

        zipfile.ZipFile.writestr = stall
    elif point == "export":
        # `ExportArchive()` makes an archive of the backend's own class.
        archive_class = type(keras.export.ExportArchive())
        write_out = archive_class.write_out

        def written(archive, filepath, *args, **kwargs):
            # The SavedModel is complete in the temporary folder; it is
            # never renamed to its version.
            write_out(archive, filepath, *args, **kwargs)
            die("export")

        archive_class.write_out = written
    else:
        raise ValueError(f"Unknown kill point: {point!r}")
    return []


def killed_run(point, folder):
    """Stage 1, then stage 2 with the kill at `point` installed."""
    split = digits()
    export_dir = os.path.join(folder, SERVING) if point == "export" else None
    model, inc = start(split, folder, export_dir)
    train_stage(model, inc, split, 0)
    train_stage(model, inc, split, 1, install_kill(point))
    print("NOT KILLED", flush=True)


def fork_killed_runs(folders):
    """Runs `killed_run(point, folder)` for each `{point: folder}` in a
    process of its own, forked from this one.

    TensorFlow is imported once, here, and not yet started (no op has run):
    the forks start it each on their own. Each writes its output to files in
    its folder and its exit status (negative: the signal) to `status`.
    """
    children = {}
    for point, folder in folders.items():
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for fd, name in ((1, "stdout"), (2, "stderr")):
                    file = os.open(
                        os.path.join(folder, name),
                        os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                    )
                    os.dup2(file, fd)
                    os.close(file)
                killed_run(point, folder)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = folder
    for pid, folder in children.items():
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        Path(folder, "status").write_text(str(code))


def child_main(point, folders):
    if point == "full-disk":
        (folder,) = folders
        full_disk(digits(), folder, FileSizeLimit())
        print("PASSED", flush=True)
    else:
        fork_killed_runs(dict(zip(KILL_POINTS, folders, strict=True)))


def run_child(point, folders, output):
    """Starts this file's `child_main(point, folders)` in a new process
    (and process group), its output in files in `output`."""
    path = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(TESTS), str(ROOT)] + ([path] if path else [])
        ),
    }
    output = Path(output)
    # Files, not pipes: nothing blocks on a full pipe.
    with open(output / "stdout", "w") as out:
        with open(output / "stderr", "w") as err:
            return subprocess.Popen(
                [sys.executable, "-c", CHILD, point, *map(str, folders)],
                stdout=out,
                stderr=err,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )


def wait_child(process, output):
    """Waits for a child; returns its stdout and the tail of its stderr."""
    try:
        process.wait(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop_child(process)
    out = (Path(output) / "stdout").read_text()
    err = (Path(output) / "stderr").read_text()
    return out, err[-3000:]


def stop_child(process):
    """Kills a child started by `run_child` and the processes it forked."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# The runs the tests compare.


@pytest.fixture(scope="module")
def split():
    return digits()


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """The killed runs, started together in one child: `(process, root)`;
    each kill point's files are in `root / point`."""
    root = tmp_path_factory.mktemp("killed")
    folders = [root / point for point in KILL_POINTS]
    for folder in folders:
        folder.mkdir()
    process = run_child("kill", folders, root)
    try:
        yield process, root
    finally:
        stop_child(process)


@pytest.fixture(scope="module")
def reference(split, tmp_path_factory):
    """The run never killed, in this process."""
    folder = tmp_path_factory.mktemp("reference")
    model, inc = start(split, folder)
    for index in range(len(STAGES)):
        train_stage(model, inc, split, index)
    return {"classes": inc.classes_, "accuracy": accuracy(inc, split)}


def wait_for_kill(killed, point):
    process, root = killed
    out, err = wait_child(process, root)
    folder = root / point
    status = folder / "status"
    assert process.returncode == 0 and status.exists(), (
        f"stdout:\n{out}\nstderr:\n{err}"
    )
    out = (folder / "stdout").read_text()
    err = (folder / "stderr").read_text()[-3000:]
    assert f"KILLED {point}" in out, f"stdout:\n{out}\nstderr:\n{err}"
    assert int(status.read_text()) == -signal.SIGKILL
    return folder


def continue_after_kill(split, reference, folder, stage, **options):
    """Restores the killed run, checks its stage, and trains it to the end."""
    path = folder / CHECKPOINT
    model, inc = restore(split, path, **options)
    assert inc.stage_ == stage
    assert inc.classes_ == committed(reference, stage)
    assert model.get_layer("head").units == len(inc.classes_)
    for index in range(stage, len(STAGES)):
        train_stage(model, inc, split, index)
    assert inc.stage_ == len(STAGES)
    assert inc.classes_ == reference["classes"]
    # Within a point of the run never killed (360 test samples).
    assert accuracy(inc, split) == pytest.approx(
        reference["accuracy"], abs=0.01
    )
    assert partial_files(folder / "checkpoints", folder / SERVING) == []
    with zipfile.ZipFile(path) as archive:
        state = json.loads(archive.read(STATE_ENTRY))
    assert state["stage"] == len(STAGES)
    return model, inc


# The tests.


@pytest.mark.parametrize("point", ["fit", "memory"])
def test_killed_during_the_stage_restores_the_stage_before(
    killed, reference, split, point
):
    folder = wait_for_kill(killed, point)
    # Nothing of stage 2 was written.
    assert os.listdir(folder / "checkpoints") == ["stages.keras"]
    continue_after_kill(split, reference, folder, stage=1)


def test_killed_while_writing_the_checkpoint(killed, reference, split):
    folder = wait_for_kill(killed, "checkpoint")
    # The kill came while the new checkpoint was being written beside the
    # old one, the model already in it; the continued run's next write
    # cleans it up.
    (partial,) = partial_files(folder / "checkpoints")
    with zipfile.ZipFile(partial) as archive:
        assert "model.weights.h5" in archive.namelist()
    continue_after_kill(split, reference, folder, stage=1)


def test_killed_while_exporting(killed, reference, split):
    folder = wait_for_kill(killed, "export")
    serving = folder / SERVING
    # The checkpoint of stage 2 came before its export, which was killed
    # with the SavedModel written but not yet renamed to its version.
    assert partial_files(serving)
    assert [n for n in os.listdir(serving) if not n.startswith(".")] == ["1"]
    model, inc = continue_after_kill(
        split, reference, folder, stage=2, export_dir=str(serving)
    )
    from keras_incremental.saving.serving import exported_versions

    versions = exported_versions(str(serving))
    # One complete version per finished stage: stage 2 exported again
    # before stage 3 trained.
    assert sorted(versions) == [1, 2, 3]
    assert [versions[v]["stage"] for v in (1, 2, 3)] == [1, 2, 3]
    for version in (1, 2, 3):
        check_version_classes(
            serving / str(version), committed(reference, version), split
        )
    # Exported already: `export` writes nothing more.
    assert Path(inc.export()) == serving / "3"
    assert sorted(exported_versions(str(serving))) == [1, 2, 3]
    assert partial_files(serving) == []


def check_version_classes(folder, names, split):
    """The version answers with `names`, one per output unit."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    answer = serve(inputs=tf.constant(split[2]))
    assert answer["probabilities"].shape == (len(split[2]), len(names))
    classes = [c.decode() for c in answer["classes"].numpy()]
    assert classes == [names[i] for i in answer["class_ids"].numpy()]


# A full disk.


class Tmpfs:
    """A small tmpfs as the checkpoint folder; filled with a filler file."""

    def __init__(self, folder):
        self.folder = folder
        self.filler = os.path.join(folder, "filler")

    def fill(self, room):
        """Leaves less than `room` bytes free."""
        stat = os.statvfs(self.folder)
        size = stat.f_bavail * stat.f_frsize - room // 2
        with open(self.filler, "wb") as file:
            file.write(bytes(size))

    def free(self):
        os.remove(self.filler)


class FileSizeLimit:
    """`RLIMIT_FSIZE` below the checkpoint's size, for this process; a
    write past it fails with `EFBIG` (SIGXFSZ ignored)."""

    def fill(self, room):
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self.limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (room // 2, self.limits[1]))

    def free(self):
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, self.limits)


def full_disk(split, folder, disk):
    """Stage 2's checkpoint write fails: the run stays at stage 1, its file
    whole, until `save_checkpoint` writes stage 2 once there is room."""
    model, inc = start(split, folder)
    path = Path(folder) / CHECKPOINT
    train_stage(model, inc, split, 0)
    saved = path.read_bytes()
    history = json.dumps(inc.history_)
    memory = [np.copy(a) for a in inc.memory.samples()]
    classes = inc.classes_
    disk.fill(len(saved))
    try:
        with pytest.raises(OSError):
            train_stage(model, inc, split, 1)
        assert path.read_bytes() == saved
        assert inc.stage_ == 1
        assert json.dumps(inc.history_) == history
        for before, after in zip(memory, inc.memory.samples(), strict=True):
            np.testing.assert_array_equal(before, after)
        assert partial_files(path.parent) == []
    finally:
        disk.free()
    _, restored = restore(split, path)
    assert restored.stage_ == 1
    assert restored.classes_ == classes == sorted(STAGES[0])

    assert Path(inc.save_checkpoint()) == path
    assert inc.stage_ == 2
    _, restored = restore(split, path)
    assert restored.stage_ == 2
    assert restored.classes_ == inc.classes_
    assert restored.classes_[len(classes) :] == sorted(STAGES[1])
    assert partial_files(path.parent) == []


@contextlib.contextmanager
def mounted_tmpfs(folder, size):
    """Mounts a tmpfs of `size` at `folder`; yields whether it could."""
    folder.mkdir(parents=True)
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        yield False
        return
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
    )
    if done.returncode != 0 or not os.path.ismount(folder):
        yield False
        return
    try:
        yield True
    finally:
        if subprocess.run(["umount", str(folder)]).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)])


def test_full_disk_keeps_the_previous_checkpoint(split, tmp_path):
    disk = tmp_path / "checkpoints"
    with mounted_tmpfs(disk, "2m") as mounted:
        if mounted:
            full_disk(split, tmp_path, Tmpfs(str(disk)))
            return
    # No tmpfs (not root, or no mount): a file size limit in a child.
    process = run_child("full-disk", [tmp_path], tmp_path)
    out, err = wait_child(process, tmp_path)
    assert "PASSED" in out, f"stdout:\n{out}\nstderr:\n{err}"
