"""Tests for `keras_incremental.saving.files`: atomic writes and leftovers."""

import os
import subprocess
import sys

import pytest

from keras_incremental.saving import files

pytestmark = pytest.mark.backend_independent

# Leftovers are told by process ids, which Windows cannot be asked about.
posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX processes")


def dead_pid():
    """The id of a process that has exited (and been waited for)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftovers(folder):
    """Leftovers of killed writes: a dead writer's file and folder, a live
    writer's file, and names that are not ours."""
    dead = dead_pid()
    made = {
        "dead_file": f".partial-{dead}-abcd_123.weights.h5",
        "dead_folder": f".partial-{dead}-efgh4567",
        "live_file": f".partial-{os.getpid()}-ijkl8901.json",
        "unrelated": ".partial-foo",
        "old_style": ".partial-mnop2345.keras",
        "not_a_pid": ".partial-12ab-qrst6789",
        "other": f"notes-{dead}-abcd1234.txt",
        "longer": f".partial-{dead}-abcd1234-my notes.txt",
    }
    for key, name in made.items():
        path = os.path.join(folder, name)
        if key == "dead_folder":
            os.makedirs(os.path.join(path, "variables"))
            with open(os.path.join(path, "saved_model.pb"), "w") as file:
                file.write("half")
        else:
            with open(path, "w") as file:
                file.write(key)
    return made


def test_atomic_path_names_its_temporary_file_with_the_pid(tmp_path):
    with files.atomic_path(tmp_path / "out.json", ".json") as temporary:
        name = os.path.basename(temporary)
        assert name.startswith(f".partial-{os.getpid()}-")
        assert name.endswith(".json")
        with open(temporary, "w") as file:
            file.write("{}")
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


@posix_only
def test_atomic_path_removes_only_dead_writers_leftovers(tmp_path):
    made = leftovers(tmp_path)
    with files.atomic_path(tmp_path / "out.json", ".json") as temporary:
        with open(temporary, "w") as file:
            file.write("{}")
    kept = {name for key, name in made.items() if not key.startswith("dead")}
    assert set(os.listdir(tmp_path)) == kept | {"out.json"}
    for key, name in made.items():
        if key not in ("dead_file", "dead_folder"):
            with open(tmp_path / name) as file:
                assert file.read() == key


@posix_only
def test_remove_stale_partials(tmp_path):
    made = leftovers(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("keep")
    link = f".partial-{dead_pid()}-link0000"
    os.symlink(target, tmp_path / link)

    removed = files.remove_stale_partials(tmp_path)

    assert sorted(removed) == sorted([made["dead_file"], made["dead_folder"]])
    expected = {
        name for key, name in made.items() if not key.startswith("dead")
    }
    assert set(os.listdir(tmp_path)) == expected | {"target", link}
    # A link is not ours to remove, nor what it points to.
    assert (target / "keep").read_text() == "keep"
    assert files.remove_stale_partials(tmp_path) == []
    assert files.remove_stale_partials(tmp_path / "missing") == []


def test_remove_stale_partials_checks_its_argument():
    with pytest.raises(TypeError, match="folder path.*Received: folder=3"):
        files.remove_stale_partials(3)
