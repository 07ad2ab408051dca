"""Pieces of error messages shared by every part."""

import collections.abc

# How many items `preview` shows by default: one bad stage of 100,000 labels
# still gives a readable message.
PREVIEW_ITEMS = 10


def preview(value, limit=PREVIEW_ITEMS, width=None):
    """A short text showing `value`, for an error message.

    A list, tuple, set, range, NumPy array or other iterable (not a
    string, bytes or a mapping) is shown as a list of its first `limit`
    items, followed, when it holds more, by how many it holds in all:
    `[0, 1, 2, ... (30 in all)]`. Anything else is shown as its `repr`.
    With `width`, a text longer than `width` characters is cut there and
    marked `...(cut)`. A value nested too deep for `repr` is named by its
    type.

    Args:
        value: Any value.
        limit: Positive integer, the most items of an iterable to show.
            Defaults to `PREVIEW_ITEMS` (10).
        width: Optional positive integer, the most characters to show
            (the `...(cut)` mark aside). Defaults to `None`: no cut.

    Returns:
        A string.

    Example:

    >>> preview(range(30))
    '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (30 in all)]'
    >>> preview({"stage": 1}, width=5)
    "{'sta...(cut)"
    """
    try:
        text = _preview(value, limit)
    except RecursionError:
        return f"<a {type(value).__name__} nested too deep to show>"
    if width is not None and len(text) > width:
        text = text[:width] + "...(cut)"
    return text


def _preview(value, limit):
    if isinstance(value, (str, bytes, collections.abc.Mapping)):
        return repr(value)
    try:
        items = list(value)
    except TypeError:
        return repr(value)
    if len(items) <= limit:
        return repr(items)
    return repr(items[:limit])[:-1] + f", ... ({len(items)} in all)]"
