"""File helpers shared by the writers (checkpoints, reports, exports)."""

import contextlib
import os
import tempfile
import zipfile


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

    A crash at any moment leaves the previous file at `path` whole.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=".partial-", suffix=suffix, dir=folder
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
        source: A string or `os.PathLike`.
        other_formats: What to do with a file of another format, appended
            to the error for a path without the `.keras` suffix.

    Raises:
        ValueError: for a path without the `.keras` suffix, one that does
            not exist, or a file that is not a zip archive.
    """
    path = os.fspath(source)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path.endswith(".keras"):
        raise ValueError(
            "Expected `source` to be a `.keras` file, as written by "
            f"`model.save('name.keras')`. Received: source='{path}'. "
            f"{other_formats}"
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
