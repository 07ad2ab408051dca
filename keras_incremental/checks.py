"""Argument checks shared by the public functions."""

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
