"""Argument checks shared by the public functions."""

import math
import numbers


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
