"""Argument checks shared by the public functions: numbers, paths."""

import math
import numbers
import os


def check_unit_count(value, argument, minimum):
    """Returns `value` as an `int` if it is a whole number >= `minimum`.

    Raises:
        TypeError: when `value` is not a whole number (bools included).
        ValueError: when it is below `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Received an invalid value for `{argument}`, expected an integer "
            f">= {minimum}. Received: {argument}={value!r} "
            f"of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(
            f"Received an invalid value for `{argument}`, expected an integer "
            f">= {minimum}. Received: {argument}={value}"
        )
    return int(value)


def check_multiplier(pattern, multiplier):
    """Returns `multiplier` as a float if it is a finite number > 0.

    Raises:
        ValueError: for anything else (bools included), naming `pattern`.
    """
    if (
        isinstance(multiplier, bool)
        or not isinstance(multiplier, numbers.Real)
        or not math.isfinite(multiplier)
        or multiplier <= 0
    ):
        raise ValueError(
            f"Received an invalid learning-rate multiplier for "
            f"{pattern!r}: expected a finite number > 0. Received: "
            f"{multiplier!r}"
        )
    return float(multiplier)


def check_path(path, argument, suffix=None, folder=False, hint=None):
    """Returns `path` as a string if it is a path ending in `suffix`.

    Nothing on disk is looked at: whether the file exists, or may be
    written, is for the caller to find out.

    Args:
        path: The value received, expected to be a string or an
            `os.PathLike` (such as a `pathlib.Path`; one whose `__fspath__`
            gives `bytes` is decoded as the file system does). A `bytes`
            value is refused, as the public functions document paths as
            strings.
        argument: The name of the argument `path` was given as, for the
            error messages.
        suffix: Optional ending the path must have, such as `".keras"`.
            Defaults to `None`: any path.
        folder: Whether `path` names a folder, for the error messages.
            Defaults to `False`.
        hint: Optional sentences ending the error message for a path
            without `suffix`: what the file is, or what to do with a file
            of another kind. Defaults to `None`.

    Returns:
        The path, as a `str`.

    Raises:
        TypeError: when `path` is not a string or `os.PathLike`.
        ValueError: when it does not end in `suffix`.

    Example:

    >>> check_path(pathlib.Path("run", "report.json"), "report", ".json")
    'run/report.json'

    `check_path("report.txt", "report", ".json")` raises `ValueError:
    Expected `report` to be a `.json` file (a path ending in '.json').
    Received: report='report.txt'`.
    """
    if not isinstance(path, (str, os.PathLike)):
        kind = "folder path" if folder else "path"
        ending = "" if suffix is None else f" ending in '{suffix}'"
        raise TypeError(
            f"Expected `{argument}` to be a {kind} (a string or "
            f"`os.PathLike`){ending}. Received: {argument}={path!r} of type "
            f"{type(path).__name__}"
        )
    path = os.fsdecode(os.fspath(path))
    if suffix is not None and not path.endswith(suffix):
        raise ValueError(
            f"Expected `{argument}` to be a `{suffix}` file (a path ending in "
            f"'{suffix}'). Received: {argument}='{path}'"
            + ("" if hint is None else f". {hint}")
        )
    return path
