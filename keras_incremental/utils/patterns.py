"""Layer-name patterns compiled with bounded matching time.

`freeze` and `learning_rates` take regular expressions, and a checkpoint
stores them; a checkpoint may come from someone else. Python's `re`
backtracks: a pattern such as `(a+)+b` takes time exponential in the length
of the name it is matched against. `compile_pattern` refuses the shapes that
cause it (a repeated group that itself repeats or holds alternatives, and
verbose mode, where spaces and comments could hide that shape) and bounds
the pattern's length and its number of repeats, so that matching a layer
name of up to `MAX_NAME_LENGTH` characters stays cheap (checkpoints refuse
longer layer names).
"""

import re

MAX_PATTERN_LENGTH = 256
MAX_REPEATS = 3
MAX_NAME_LENGTH = 256
_VERBOSE_FLAG = re.compile(r"\(\?[a-zA-Z]*x[a-zA-Z]*(?:-[a-zA-Z]*)?[:)]")

_BRACES = re.compile(r"\{(\d*)(,?)(\d*)\}")


def compile_pattern(pattern, purpose):
    """Compiles a layer-name pattern after checking it is safe to match.

    Args:
        pattern: A layer name or regular expression (a string).
        purpose: What the pattern is for, for error messages
            (e.g. `"Freeze pattern"`).

    Returns:
        The compiled `re.Pattern`.

    Raises:
        TypeError: for a pattern that is not a string.
        ValueError: for an invalid expression, one longer than
            `MAX_PATTERN_LENGTH`, one in verbose mode (`(?x)`), one with a
            repeated group that repeats or holds alternatives inside
            (`(a+)+`, `(a|ab)*`), or one with more than `MAX_REPEATS`
            repeats of more than one (`*`, `+`, `{m,n}` with `n > 1`).

    Example:

    >>> compile_pattern("block_[0-9]+", "Freeze pattern").fullmatch("block_2")
    <re.Match object; span=(0, 7), match='block_2'>
    """
    if not isinstance(pattern, str):
        raise TypeError(
            f"Expected {purpose.lower()} to be a string. Received: "
            f"{pattern!r} of type {type(pattern).__name__}"
        )
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(
            f"{purpose} is {len(pattern)} characters long; expected at most "
            f"{MAX_PATTERN_LENGTH}. Received: {pattern[:40]!r}..."
        )
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"{purpose} {pattern!r} is not a valid regular expression "
            f"({error}); expected a layer name or pattern."
        ) from error
    if compiled.flags & re.VERBOSE or _VERBOSE_FLAG.search(pattern):
        raise ValueError(
            f"{purpose} {pattern!r} uses verbose mode (`x` flag); expected "
            "a pattern without it (its spaces and comments could hide a "
            "nested repeat)."
        )
    nested, repeats = _repeats(pattern)
    if nested:
        raise ValueError(
            f"{purpose} {pattern!r} repeats a group that itself repeats or "
            f"holds alternatives ({nested!r}); matching it can take time "
            "exponential in the name's length. Expected a pattern without "
            "nested repeats, such as 'block_[0-9]+' or '(conv|dense)_1'."
        )
    if repeats > MAX_REPEATS:
        raise ValueError(
            f"{purpose} {pattern!r} has {repeats} repeats (`*`, `+`, "
            f"`{{m,n}}`); expected at most {MAX_REPEATS}."
        )
    return compiled


def _repeats(pattern):
    """`(nested, repeats)`: the first repeated group that repeats or holds
    alternatives inside (or `None`), and the count of repeats of more than
    one (`?` and `{0,1}` are not counted)."""
    # One entry per open group: (start index, whether it is risky).
    groups = [(0, False)]
    previous = None  # (start, risky) of a group that just closed
    unbounded = 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        closed, previous = previous, None
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(pattern, i)
            continue
        if char == "(":
            groups.append((i, False))
            i = _group_body(pattern, i)
            continue
        if char == ")" and len(groups) > 1:
            start, risky = groups.pop()
            previous = (start, risky)
            if risky:
                _mark(groups)
            i += 1
            continue
        if char == "|":
            _mark(groups)
            i += 1
            continue
        length, many = _quantifier(pattern, i)
        if length:
            if many:
                unbounded += 1
            if closed is not None and closed[1]:
                return pattern[closed[0] : i + length], unbounded
            _mark(groups)
            i += length
            # A lazy or possessive suffix is part of the same repeat.
            if i < len(pattern) and pattern[i] in "?+":
                i += 1
            continue
        i += 1
    return None, unbounded


def _mark(groups):
    start, _ = groups[-1]
    groups[-1] = (start, True)


def _quantifier(pattern, i):
    """`(length, many)` of the repeat at `i` (`many`: it may repeat more
    than once), `(0, False)` for none."""
    char = pattern[i]
    if char in "*+":
        return 1, True
    if char == "?":
        return 1, False
    if char == "{":
        match = _BRACES.match(pattern, i)
        if match:
            low, comma, high = match.groups()
            if not comma:
                many = int(low or 0) > 1
            else:
                many = not high or int(high) > 1
            return match.end() - i, many
    return 0, False


def _class_end(pattern, i):
    """The index after the character class starting at `i`."""
    i += 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _group_body(pattern, i):
    """The index of the first character inside the group opened at `i`,
    past an extension such as `?:`, `?P<name>` or `?<=`."""
    i += 1
    if (
        pattern.startswith("?P<", i)
        or pattern.startswith("?<", i)
        and (
            not pattern.startswith("?<=", i)
            and not pattern.startswith("?<!", i)
        )
    ):
        return pattern.index(">", i) + 1
    if pattern.startswith("?P=", i):
        return pattern.index(")", i)
    for prefix in ("?<=", "?<!", "?:", "?=", "?!", "?>"):
        if pattern.startswith(prefix, i):
            return i + len(prefix)
    if pattern.startswith("?", i):
        # Inline flags: `(?i)` or `(?i:...)`.
        j = i + 1
        while j < len(pattern) and pattern[j] not in ":)":
            j += 1
        return j + 1 if j < len(pattern) and pattern[j] == ":" else j
    return i
