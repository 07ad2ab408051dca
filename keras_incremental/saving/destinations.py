"""Checks that the run's output paths can be written, before a stage trains.

A stage can train for hours; a checkpoint folder found read-only only at its
end costs all of it. `check_destination` is run at the start of each stage
for the checkpoint, the report and the serving export: it finds the folder
the file will go to (or the nearest one that exists, since the writers make
missing folders) and writes and removes a probe file there. The probe is
named like the writers' temporary files (`files.partial_prefix`), so one
left by a crash is cleaned like theirs.
"""

import os
import tempfile

from keras_incremental.saving.files import partial_prefix


def check_destination(path, argument, folder=False):
    """Raises `ValueError` unless `path` can be written now.

    Args:
        path: The file (or, with `folder=True`, the folder) to be written.
        argument: The option that names it, for messages (e.g.
            `"checkpoint"`).
        folder: Whether `path` is a folder that will hold the output.
            Defaults to `False`.

    Raises:
        ValueError: when `path` is a folder where a file is expected (or a
            file where a folder is expected), when a parent of it is a file,
            or when the folder it goes to cannot be written (read-only,
            without permission). Nothing is left behind.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path):
        if folder and not os.path.isdir(path):
            _fail(argument, path, "is a file; expected a folder (or none)")
        if not folder and os.path.isdir(path):
            _fail(argument, path, "is a folder; expected a file (or none)")
    parent = path if folder else os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        _fail(
            argument,
            path,
            f"cannot be made: '{parent}' on its path is a file, not a folder",
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=partial_prefix(), dir=parent)
    except OSError as error:
        _fail(argument, path, f"cannot be written: '{parent}' {_why(error)}")
    os.close(handle)
    os.remove(probe)


def _why(error):
    return f"refused a new file ({error.strerror or error})"


def _fail(argument, path, problem):
    raise ValueError(
        f"The `{argument}` destination '{path}' {problem}. Checked before "
        "the stage trains, so that its work is not lost at the end; fix the "
        f"path or its permissions, or pass another `{argument}`. Nothing "
        "was changed."
    )
