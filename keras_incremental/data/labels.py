"""Append-only encoder between class names and class indices."""

import base64
import binascii
import math
import numbers

import numpy as np

from keras_incremental.utils.messages import PREVIEW_ITEMS
from keras_incremental.utils.messages import preview

_KINDS = ("int", "str", "bytes")
_ONEHOT_HELPER = "keras_incremental.data.labels.labels_from_onehot(y)"


def plain_label(label):
    """A class name as a plain Python value (for JSON and dict lookups)."""
    if isinstance(label, bytes):
        return label.decode("utf-8")
    return label.item() if isinstance(label, np.generic) else label


class LabelEncoder:
    """Append-only encoder between class names and class indices.

    Like scikit-learn's `LabelEncoder`, but incremental: each call to
    `partial_fit` appends the classes it has not seen before, in the order
    of their first appearance, and an index once given never changes. This
    is what a class-incremental classifier needs: output unit `i` of the
    head keeps meaning class `classes_[i]` while new classes arrive.

    Class names are integers, strings or bytes, all of one kind. NumPy
    integers and whole floats such as `3.0` are read as the Python integer
    `3`, and NumPy strings as Python strings; bytes stay bytes, so `b"a"` and
    `"a"` are different classes. Booleans, `None`, NaN and floats such as
    `2.5` are rejected, as are labels that mix kinds.

    The encoder takes 1-D labels only. Convert 2-D one-hot labels with
    `labels_from_onehot` first.

    Args:
        classes: Optional 1-D sequence of class names to start with, as if
            given to `partial_fit`. Defaults to `None` (no classes).

    Attributes:
        classes_: List of the class names, in the order they were first seen;
            `classes_[i]` is the class of index `i`. A copy: changing it does
            not change the encoder.

    Example:

    >>> encoder = LabelEncoder()
    >>> encoder.partial_fit(["cat", "dog", "cat"])
    ['cat', 'dog']
    >>> encoder.partial_fit(["bird", "dog"])
    ['bird']
    >>> encoder.classes_
    ['cat', 'dog', 'bird']
    >>> encoder.transform(["dog", "bird"])
    array([1, 2])
    >>> encoder.inverse_transform([2, 0])
    ['bird', 'cat']
    """

    def __init__(self, classes=None):
        self._classes = []
        self._index = {}
        self._kind = None
        if classes is not None:
            kind, values = _as_labels(classes, "classes")
            if values.size:
                self._add(kind, _unique_in_order(values))

    @property
    def classes_(self):
        return list(self._classes)

    @property
    def num_classes(self):
        """The number of classes seen so far."""
        return len(self._classes)

    @property
    def kind(self):
        """The kind of the class names: `"int"`, `"str"`, `"bytes"`, or
        `None` while the encoder has no classes."""
        return self._kind

    def __len__(self):
        return len(self._classes)

    def __repr__(self):
        return f"LabelEncoder(classes={preview(self._classes)})"

    def partial_fit(self, labels):
        """Appends the classes of `labels` that the encoder has not seen.

        The whole input is checked before anything changes: when it raises,
        the encoder is as it was.

        Args:
            labels: 1-D list, tuple or NumPy array of class names (integers,
                strings or bytes), duplicates allowed, at least one.

        Returns:
            List of the new classes, in the order of their first appearance
            in `labels`; their indices follow those of the known classes.
            Empty when every label was known.

        Raises:
            TypeError: when `labels` is not a 1-D sequence, holds booleans or
                values that are not class names, mixes kinds (such as `1` and
                `"1"`), or is of another kind than the known classes.
            ValueError: when `labels` is empty or not 1-D, or holds `None`,
                NaN or a float that is not a whole number.

        Example:

        >>> encoder = LabelEncoder()
        >>> encoder.partial_fit([3, 1, 3])
        [3, 1]
        >>> encoder.partial_fit(np.array([1, 7]))
        [7]
        """
        kind, values = _as_labels(labels, "labels")
        if not values.size:
            raise ValueError(
                "Received no labels; expected at least one label to learn "
                "classes from. Received: labels=[]"
            )
        self._check_kind(kind, values, "labels")
        new = [c for c in _unique_in_order(values) if c not in self._index]
        self._add(kind, new)
        return new

    def transform(self, labels):
        """Maps class names to their indices.

        Args:
            labels: 1-D list, tuple or NumPy array of known class names.

        Returns:
            1-D `np.int64` array of the indices, one per label. Empty for
            empty `labels`.

        Raises:
            ValueError: when a label is not a known class (the message names
                them), or for the invalid inputs listed in `partial_fit`.
            TypeError: for the invalid inputs listed in `partial_fit`.

        Example:

        >>> encoder = LabelEncoder(["low", "high"])
        >>> encoder.transform(["high", "high", "low"])
        array([1, 1, 0])
        """
        kind, values = _as_labels(labels, "labels")
        if not values.size:
            return np.zeros((0,), dtype=np.int64)
        if not self._classes:
            raise ValueError(
                "This `LabelEncoder` has no classes yet; expected "
                "`partial_fit` to be called before `transform`. Call "
                "`encoder.partial_fit(labels)` first."
            )
        self._check_kind(kind, values, "labels")
        uniques, first, inverse = np.unique(
            values, return_index=True, return_inverse=True
        )
        codes = np.empty(len(uniques), dtype=np.int64)
        unseen = []
        for position, value in enumerate(uniques):
            value = _python(value)
            code = self._index.get(value)
            if code is None:
                unseen.append((first[position], value))
            else:
                codes[position] = code
        if unseen:
            names = [value for _, value in sorted(unseen)]
            raise ValueError(
                f"Received {len(names)} label(s) that are not known classes: "
                f"{preview(names)}; expected only the encoder's "
                f"{len(self._classes)} classes: {preview(self._classes)}. "
                "Call `partial_fit` with these labels first to add them as "
                "new classes."
            )
        return codes[inverse.reshape(-1)]

    def inverse_transform(self, indices):
        """Maps class indices back to class names.

        Args:
            indices: 1-D list, tuple or NumPy array of integer indices, each
                in `[0, num_classes)`.

        Returns:
            List of the class names (Python `int`, `str` or `bytes`), one per
            index.

        Raises:
            TypeError: when `indices` is not a 1-D sequence or holds values
                that are not integers (booleans and floats included).
            ValueError: when `indices` is not 1-D or an index is out of
                range.

        Example:

        >>> encoder = LabelEncoder([b"no", b"yes"])
        >>> encoder.inverse_transform(np.array([1, 0, 1]))
        [b'yes', b'no', b'yes']
        """
        indices = _as_indices(indices)
        bad = np.flatnonzero((indices < 0) | (indices >= len(self._classes)))
        if bad.size:
            received = ", ".join(
                f"indices[{i}]={indices[i]}" for i in bad[:PREVIEW_ITEMS]
            )
            if not self._classes:
                expected = "no index, as the encoder has no classes yet"
            else:
                expected = (
                    f"integers in [0, {len(self._classes)}) for the "
                    f"encoder's {len(self._classes)} classes"
                )
            raise ValueError(
                f"Received {bad.size} class index(es) out of range; expected "
                f"{expected}. Received: {received}"
            )
        return [self._classes[i] for i in indices.tolist()]

    def to_config(self):
        """Returns the encoder's state as a JSON-serialisable dict.

        The dict holds `"kind"` (`"int"`, `"str"`, `"bytes"`, or `None` when
        there are no classes) and `"classes"`, the class names in index
        order. Bytes are stored as base64 ASCII strings, so that every class
        name survives `json.dumps` and `json.loads` exactly.

        Returns:
            A dict for `LabelEncoder.from_config`.

        Example:

        >>> LabelEncoder([b"\\xff"]).to_config()
        {'kind': 'bytes', 'classes': ['/w==']}
        """
        if self._kind == "bytes":
            classes = [
                base64.b64encode(c).decode("ascii") for c in self._classes
            ]
        else:
            classes = list(self._classes)
        return {"kind": self._kind, "classes": classes}

    @classmethod
    def from_config(cls, config):
        """Creates an encoder from the output of `to_config`.

        Args:
            config: A dict as returned by `to_config`, possibly after a round
                trip through JSON.

        Returns:
            A `LabelEncoder` with the same classes, at the same indices.

        Raises:
            TypeError: when `config` is not a dict, or a class name is not of
                the stored kind.
            ValueError: when a key is missing, the kind is unknown, a bytes
                class is not valid base64, or a class name is repeated.

        Example:

        >>> config = json.loads(json.dumps(LabelEncoder([7, 2]).to_config()))
        >>> LabelEncoder.from_config(config).classes_
        [7, 2]
        """
        if not isinstance(config, dict):
            raise TypeError(
                "Expected `config` to be a dict from "
                "`LabelEncoder.to_config()`. Received: "
                f"config={config!r} of type {type(config).__name__}"
            )
        missing = [key for key in ("kind", "classes") if key not in config]
        if missing:
            raise ValueError(
                f"The `LabelEncoder` config lacks the key(s) {missing}; "
                "expected the dict from `LabelEncoder.to_config()`, with "
                f"'kind' and 'classes'. Received: config={config!r}"
            )
        kind, classes = config["kind"], config["classes"]
        if kind is not None and kind not in _KINDS:
            raise ValueError(
                "Received an invalid value for 'kind' in the `LabelEncoder` "
                f"config, expected one of {list(_KINDS)} or None. "
                f"Received: kind={kind!r}"
            )
        if not isinstance(classes, (list, tuple)):
            raise TypeError(
                "Expected 'classes' in the `LabelEncoder` config to be a "
                f"list. Received: classes={classes!r} of type "
                f"{type(classes).__name__}"
            )
        decoded = [_decode_class(kind, c, i) for i, c in enumerate(classes)]
        seen = set()
        repeated = []
        for name in decoded:
            if name in seen:
                repeated.append(name)
            seen.add(name)
        if repeated:
            raise ValueError(
                "The `LabelEncoder` config repeats class names "
                f"{preview(repeated)}; expected each class once. The config "
                "is corrupted: write it again with `to_config()`."
            )
        encoder = cls()
        if decoded:
            encoder._add(kind, decoded)
        return encoder

    def _check_kind(self, kind, values, argument):
        if self._kind is None or kind == self._kind:
            return
        raise TypeError(
            f"Received {kind} labels, but the encoder's classes are "
            f"{self._kind}; expected {self._kind} labels, as one encoder "
            "holds class names of one kind. Convert the labels, or use a new "
            f"`LabelEncoder`. Received: {argument}[0]={_python(values[0])!r}, "
            f"with known classes {preview(self._classes)}"
        )

    def _add(self, kind, classes):
        for name in classes:
            self._index[name] = len(self._classes)
            self._classes.append(name)
        if classes:
            self._kind = kind


def labels_from_onehot(y):
    """Turns 2-D one-hot labels into 1-D class indices.

    Args:
        y: 2-D array-like of shape `(batch, classes)` whose rows each hold a
            single 1 and 0 elsewhere (booleans allowed).

    Returns:
        1-D `np.int64` array of shape `(batch,)`: the column of each row's 1.

    Raises:
        TypeError: when `y` is not an array-like.
        ValueError: when `y` is not 2-D or a row is not one-hot, such as
            probabilities or smoothed labels; use `np.argmax(y, axis=-1)`
            for those.

    Example:

    >>> labels_from_onehot([[0, 1, 0], [1, 0, 0]])
    array([1, 0])
    """
    if isinstance(y, (str, bytes)) or not (
        isinstance(y, (list, tuple, np.ndarray)) or hasattr(y, "__array__")
    ):
        raise TypeError(
            "Expected 2-D one-hot labels as a NumPy array or nested list. "
            f"Received: y={y!r} of type {type(y).__name__}"
        )
    try:
        array = np.asarray(y)
    except ValueError:
        raise ValueError(
            "Received 2-D labels that are not one-hot: rows of different "
            "lengths; expected an array of shape (batch, classes)."
        ) from None
    if array.ndim != 2:
        raise ValueError(
            "Expected 2-D one-hot labels of shape (batch, classes). 1-D class "
            "labels need no conversion: give them to `LabelEncoder` as they "
            f"are. Received: y of shape {array.shape}"
        )
    if array.dtype.kind not in "biuf":
        raise ValueError(
            "Received 2-D labels that are not one-hot: they are not numbers; "
            "expected 0 and 1 (or booleans). "
            f"Received: y of dtype {array.dtype}"
        )
    if not array.shape[0]:
        return np.zeros((0,), dtype=np.int64)
    ones = array == 1
    onehot = np.all(ones | (array == 0), axis=1) & (ones.sum(axis=1) == 1)
    bad = np.flatnonzero(~onehot)
    if bad.size:
        row = bad[0]
        raise ValueError(
            f"Received 2-D labels that are not one-hot: {bad.size} of "
            f"{array.shape[0]} rows are not; expected each row to hold a "
            "single 1 and 0 elsewhere. For probabilities or soft labels, take "
            "`np.argmax(y, axis=-1)` instead. "
            f"Received: y[{row}]={preview(array[row].tolist())}"
        )
    return np.argmax(ones, axis=1).astype(np.int64)


def _as_labels(labels, argument):
    """Returns `(kind, values)`: the labels as a 1-D array of class names.

    `values` is an integer array or an object array of Python `int`, `str`
    or `bytes`; `kind` is `None` when it is empty.
    """
    array = _as_1d(labels, argument)
    if array is None:
        return _normalize_each(labels, argument)
    if not array.size:
        return None, np.zeros((0,), dtype=np.int64)
    dtype_kind = array.dtype.kind
    if dtype_kind == "b":
        raise TypeError(_bool_message(f"{argument}[0]", array[0]))
    if dtype_kind in "iu":
        return "int", array
    if dtype_kind == "f":
        missing = np.flatnonzero(np.isnan(array))
        if missing.size:
            where = f"{argument}[{missing[0]}]"
            raise ValueError(_missing_message(where, array[missing[0]]))
        fractional = np.flatnonzero(
            ~np.isfinite(array) | (array != np.floor(array))
        )
        if fractional.size:
            where = f"{argument}[{fractional[0]}]"
            raise ValueError(_fraction_message(where, array[fractional[0]]))
        if np.all(np.abs(array) < 2.0**63):
            return "int", array.astype(np.int64)
        return "int", _object_array([int(v) for v in array.tolist()])
    if dtype_kind == "U":
        return "str", array.astype(object)
    if dtype_kind == "S":
        return "bytes", array.astype(object)
    if dtype_kind == "O":
        return _normalize_each(array, argument)
    raise TypeError(
        f"Received `{argument}` of dtype {array.dtype}; expected class "
        "names that are integers, strings or bytes. Convert them to one of "
        f"these first. Received: {argument}[0]={array[0]!r}"
    )


def _as_1d(values, argument):
    """Returns `values` as a 1-D array, or `None` for a list or tuple."""
    if isinstance(values, (list, tuple, range)):
        return None
    if isinstance(values, (str, bytes)) or not (
        isinstance(values, np.ndarray) or hasattr(values, "__array__")
    ):
        fix = ""
        if isinstance(values, (str, bytes, numbers.Number)):
            fix = f"To pass one value, wrap it in a list: [{values!r}]. "
        raise TypeError(
            f"Expected `{argument}` to be a 1-D list, tuple or NumPy array. "
            f"{fix}Received: {argument}={values!r} of type "
            f"{type(values).__name__}"
        )
    array = np.asarray(values)
    if array.ndim == 1:
        return array
    if array.ndim == 0:
        raise ValueError(
            f"Expected `{argument}` to be 1-D; received a 0-D array. Wrap "
            f"the value in a list. Received: {argument}={values!r}"
        )
    if argument == "indices":
        fix = (
            "For class probabilities of shape (batch, classes), take "
            "`np.argmax(probabilities, axis=-1)` first."
        )
    else:
        fix = (
            f"For one-hot labels, convert them with `{_ONEHOT_HELPER}` "
            "first; for a column of labels of shape (batch, 1), use "
            "`y.reshape(-1)`."
        )
    raise ValueError(
        f"Expected `{argument}` to be 1-D, one value per example. {fix} "
        f"Received: {argument} of shape {array.shape}"
    )


def _normalize_each(values, argument):
    """`_as_labels` for a list, tuple or object array, one value at a time."""
    first = {}
    names = []
    for position, value in enumerate(values):
        where = f"{argument}[{position}]"
        kind, name = _normalize(value, where)
        if kind not in first:
            if first:
                other, (other_where, other_name) = next(iter(first.items()))
                raise TypeError(
                    f"Received `{argument}` that mix class names of kinds "
                    f"{other} and {kind}; expected all of one kind, all "
                    "integers, all strings or all bytes (so that, say, 1 and "
                    "'1' are not silently two classes). Convert them to one "
                    f"kind first. Received: {other_where}={other_name!r} and "
                    f"{where}={name!r}"
                )
            first[kind] = (where, name)
        names.append(name)
    if not names:
        return None, np.zeros((0,), dtype=np.int64)
    return next(iter(first)), _object_array(names)


def _normalize(value, where):
    """Returns `(kind, name)`: one label as a Python int, str or bytes."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(_bool_message(where, value))
    if value is None:
        raise ValueError(_missing_message(where, value))
    if isinstance(value, numbers.Integral):
        return "int", int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            raise ValueError(_missing_message(where, value))
        if not math.isfinite(value) or value != math.floor(value):
            raise ValueError(_fraction_message(where, value))
        return "int", int(value)
    if isinstance(value, str):
        return "str", str(value)
    if isinstance(value, bytes):
        return "bytes", bytes(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(
            f"Received a nested label, {where}={value!r}; expected 1-D "
            f"labels, one class name per example. For one-hot labels, "
            f"convert them with `{_ONEHOT_HELPER}` first."
        )
    raise TypeError(
        f"Received a label of type {type(value).__name__}; expected class "
        "names that are integers, strings or bytes. Convert it to one of "
        f"these first. Received: {where}={value!r}"
    )


def _as_indices(indices):
    """Returns `indices` as a 1-D integer array, checking every value."""
    array = _as_1d(indices, "indices")
    if array is None or array.dtype.kind == "O":
        indices = indices if array is None else array
        for position, value in enumerate(indices):
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, numbers.Integral
            ):
                raise TypeError(
                    "Received a class index that is not an integer; expected "
                    "integer indices. Received: "
                    f"indices[{position}]={value!r} of type "
                    f"{type(value).__name__}"
                )
        # Python integers may be too large for int64; they are out of range
        # anyway, and an object array keeps them for the error message.
        return _object_array([int(v) for v in indices])
    if array.dtype.kind in "iu" or not array.size:
        return array
    raise TypeError(
        f"Received class indices of dtype {array.dtype}; expected integers. "
        "For probabilities, take `np.argmax(probabilities, axis=-1)`; for "
        "whole-number floats, cast with `.astype('int64')`. Received: "
        f"indices={preview(array.tolist())}"
    )


def _decode_class(kind, value, position):
    """One class name of a `to_config` dict, checked against its kind."""
    where = f"classes[{position}]"
    if kind is None:
        raise ValueError(
            "The `LabelEncoder` config has classes but no kind; expected "
            f"kind 'int', 'str' or 'bytes'. Received: {where}={value!r}"
        )
    expected = {"int": int, "str": str, "bytes": str}[kind]
    if isinstance(value, bool) or not isinstance(value, expected):
        raise TypeError(
            f"The `LabelEncoder` config of kind '{kind}' holds a class name "
            f"of type {type(value).__name__}; expected {expected.__name__}"
            f"{' (base64)' if kind == 'bytes' else ''}. "
            f"Received: {where}={value!r}"
        )
    if kind != "bytes":
        return value
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError(
            "The `LabelEncoder` config of kind 'bytes' holds a class name "
            f"that is not valid base64. Received: {where}={value!r}"
        ) from None


def _unique_in_order(values):
    """The distinct values, in the order of their first appearance."""
    uniques, first = np.unique(values, return_index=True)
    return [_python(uniques[i]) for i in np.argsort(first)]


def _python(value):
    return value.item() if isinstance(value, np.generic) else value


def _object_array(items):
    # `np.array(items, dtype=object)` would not always give a 1-D array.
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _bool_message(where, value):
    return (
        "Received a boolean label, ambiguous as a class name; expected "
        "integers, strings or bytes. Convert booleans explicitly, e.g. to "
        f"0 and 1 or to 'no' and 'yes'. Received: {where}={value!r}"
    )


def _missing_message(where, value):
    return (
        "Received a missing label; expected every label to be a class name "
        "(an integer, a string or bytes). Drop or label the examples "
        f"without one. Received: {where}={value!r}"
    )


def _fraction_message(where, value):
    return (
        "Received a float label that is not a whole number; expected "
        "integers (whole floats such as 3.0 are read as 3), strings or "
        f"bytes. Round or map the labels first. Received: {where}={value!r}"
    )
