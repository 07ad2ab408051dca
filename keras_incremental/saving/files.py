"""File helpers shared by the writers (checkpoints, reports, exports)."""

import contextlib
import os
import re
import shutil
import stat
import tempfile
import zipfile

from keras_incremental.utils.checks import check_path

# Temporary files and folders of the atomic writers are named
# `.partial-<pid>-<random><suffix>`, `<pid>` being the writer's process id,
# so that the leftovers of a killed writer can be told apart from the work of
# a live one. `<random>` is `tempfile`'s: 8 of `[a-z0-9_]`; `<suffix>` is a
# file name extension or several (`.keras`, `.weights.h5`), or none.
_PARTIAL = re.compile(
    r"\.partial-([1-9][0-9]{0,9})-[a-z0-9_]{8}(?:\.[A-Za-z0-9_]+)*"
)


def partial_prefix():
    """The name prefix of this process's temporary files and folders, for
    `tempfile.mkstemp` and `mkdtemp`: `".partial-<pid>-"`."""
    return f".partial-{os.getpid()}-"


def remove_stale_partials(folder):
    """Removes the leftovers of killed atomic writes from `folder`.

    A writer that is killed (or whose machine stops) leaves its temporary
    file or folder behind. Those named by this package's writers,
    `.partial-<pid>-<random><suffix>` (see `partial_prefix`), whose `<pid>`
    is not a running process, are removed; nothing else is: not a live
    writer's, not a name of another pattern, not a symbolic link. The
    writers call it before they write into `folder`.

    A writer on another machine (or in another process namespace) that
    shares the folder is not known here by its process id: its temporary
    files could be taken for leftovers. Share a folder between processes of
    one machine only.

    It does nothing on Windows, where a process cannot be asked whether it
    runs in this way.

    Args:
        folder: A folder path (string or `os.PathLike`). A missing folder
            has no leftovers.

    Returns:
        The names of the removed entries, as a list of strings.

    Raises:
        TypeError: when `folder` is not a path.
    """
    folder = check_path(folder, "folder", folder=True)
    if os.name == "nt":
        return []
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in names:
        match = _PARTIAL.fullmatch(name)
        if match is None or not _process_ended(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        try:
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                shutil.rmtree(path)
            elif stat.S_ISREG(mode):
                os.remove(path)
            else:
                continue
        except OSError:
            # Removed by another writer meanwhile, or not ours to remove:
            # a leftover never stops a write.
            continue
        removed.append(name)
    return removed


def _process_ended(pid):
    """Whether no process with id `pid` runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError, ValueError):
        # `PermissionError`: it runs, as another user.
        return False
    return False


def open_mode(path, directory=False):
    """Gives `path` the mode a plain `open` or `os.mkdir` would.

    `tempfile.mkstemp` and `mkdtemp` make owner-only files and folders; the
    atomic writers move those into place, so without this a checkpoint or a
    serving version could not be read by another user (a TensorFlow Serving
    process, a colleague).
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if directory else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_path(path, suffix):
    """Yields a temporary file beside `path` to write; moves it into place
    (synced, with the umask's mode) when the block ends without an error,
    and removes it otherwise. The folder is made when missing.

    A crash at any moment leaves the previous file at `path` whole. The
    temporary file is named `.partial-<pid>-<random><suffix>`; the leftovers
    of writers killed before (see `remove_stale_partials`) are removed from
    the folder first.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_partials(folder)
    handle, temporary = tempfile.mkstemp(
        prefix=partial_prefix(), suffix=suffix, dir=folder
    )
    os.close(handle)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        open_mode(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def keras_file_path(source, other_formats):
    """The path of an existing `.keras` archive named by `source`.

    Args:
        source: A string or `os.PathLike`, given as argument `source`.
        other_formats: What to do with a file of another format, appended
            to the error for a path without the `.keras` suffix.

    Returns:
        The path, as a string.

    Raises:
        TypeError: for a `source` that is not a path
            (`keras_incremental.utils.checks.check_path`).
        ValueError: for a path without the `.keras` suffix, one that does
            not exist, or a file that is not a zip archive.
    """
    path = check_path(
        source,
        "source",
        ".keras",
        hint=f"Such a file is written by `model.save('name.keras')`. "
        f"{other_formats}",
    )
    if not os.path.isfile(path):
        raise ValueError(
            f"File not found: source='{path}'. Expected the path of an "
            "existing `.keras` file."
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Expected `source` to be a `.keras` zip archive, as written by "
            f"`model.save`; '{path}' is not a zip file. Received: "
            f"source='{path}'"
        )
    return path
