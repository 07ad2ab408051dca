"""Argument checks shared by the public functions: numbers, flags, paths.

Each check returns the value as a plain Python `int`, `float` or `bool`
(NumPy scalars included, so that a `get_config` stays JSON-able) or raises
an error in the Keras style: ``"Received an invalid value for `weight`,
expected a finite number >= 0. Received: weight=nan"``. A `TypeError` when
the value is of the wrong kind (a bool is not a number here), a `ValueError`
when it is of the right kind but out of range (or not finite).
"""

import math
import numbers
import os

import numpy as np


def check_number(
    value,
    name,
    *,
    minimum=None,
    maximum=None,
    include_minimum=True,
    include_maximum=True,
):
    """Returns `value` as a `float` if it is a finite real number in range.

    Python and NumPy numbers (`numbers.Real`: floating and integer scalars)
    are accepted; bools, `np.bool_` and NaN or infinite values are not.

    Args:
        value: The argument's value.
        name: The argument's name, for the error message.
        minimum: The lowest value accepted, or `None` for no bound below.
            Defaults to `None`.
        maximum: The highest value accepted, or `None` for no bound above.
            Defaults to `None`.
        include_minimum: Whether `minimum` itself is accepted. Defaults to
            `True`.
        include_maximum: Whether `maximum` itself is accepted. Defaults to
            `True`.

    Returns:
        `value` as a Python `float`.

    Raises:
        TypeError: when `value` is not a real number (bools included).
        ValueError: when it is NaN, infinite or out of range.
    """
    expected = "a finite number" + _range(
        minimum, maximum, include_minimum, include_maximum
    )
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(_message(name, expected, value, kind=True))
    try:
        number = float(value)
    except OverflowError:  # An integer past the largest float.
        number = math.inf if value > 0 else -math.inf
    if not math.isfinite(number) or not _in_range(
        number, minimum, maximum, include_minimum, include_maximum
    ):
        raise ValueError(_message(name, expected, value))
    return number


def check_integer(value, name, minimum=None, *, maximum=None):
    """Returns `value` as an `int` if it is a whole number in range.

    Python and NumPy integers (`numbers.Integral`) are accepted; bools,
    `np.bool_` and floats (even whole ones) are not.

    Args:
        value: The argument's value.
        name: The argument's name, for the error message.
        minimum: The lowest value accepted, or `None` for no bound below.
            Defaults to `None`.
        maximum: The highest value accepted, or `None` for no bound above.
            Defaults to `None`.

    Returns:
        `value` as a Python `int`.

    Raises:
        TypeError: when `value` is not a whole number (bools included).
        ValueError: when it is out of range.
    """
    expected = "an integer" + _range(minimum, maximum, True, True)
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(_message(name, expected, value, kind=True))
    if not _in_range(value, minimum, maximum, True, True):
        raise ValueError(_message(name, expected, value))
    return int(value)


def check_unit_count(value, argument, minimum):
    """Returns `value` as an `int` if it is a whole number >= `minimum`.

    `check_integer` with a bound below only.

    Raises:
        TypeError: when `value` is not a whole number (bools included).
        ValueError: when it is below `minimum`.
    """
    return check_integer(value, argument, minimum)


def check_bool(value, name):
    """Returns `value` as a `bool` if it is one (`bool` or `np.bool_`).

    Other values are refused, truthy or not: `1`, `"yes"`, `None`.

    Args:
        value: The argument's value.
        name: The argument's name, for the error message.

    Returns:
        `value` as a Python `bool`.

    Raises:
        TypeError: when `value` is not a bool.
    """
    if not _is_bool(value):
        raise TypeError(
            _message(name, "a boolean (True or False)", value, kind=True)
        )
    return bool(value)


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


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def _range(minimum, maximum, include_minimum, include_maximum):
    """The accepted range in words: `" >= 0"`, `" in (0, 1]"`, or `""`."""
    if minimum is not None and maximum is not None:
        low = "[" if include_minimum else "("
        high = "]" if include_maximum else ")"
        return f" in {low}{minimum}, {maximum}{high}"
    if minimum is not None:
        return f" {'>=' if include_minimum else '>'} {minimum}"
    if maximum is not None:
        return f" {'<=' if include_maximum else '<'} {maximum}"
    return ""


def _in_range(value, minimum, maximum, include_minimum, include_maximum):
    if minimum is not None and (
        value < minimum if include_minimum else value <= minimum
    ):
        return False
    if maximum is not None and (
        value > maximum if include_maximum else value >= maximum
    ):
        return False
    return True


def _message(name, expected, value, kind=False):
    # The value of a wrong kind is shown as `repr`, with its type (`'2'`
    # and `2` look alike otherwise); a number as `str` (`nan`, not
    # `np.float64(nan)`).
    received = (
        f"{value!r} of type {type(value).__name__}" if kind else f"{value}"
    )
    return (
        f"Received an invalid value for `{name}`, expected {expected}. "
        f"Received: {name}={received}"
    )


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
