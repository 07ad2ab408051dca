"""File helpers shared by the writers (checkpoints, reports, exports)."""

import os


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
