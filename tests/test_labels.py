import json

import numpy as np
import pytest

from keras_incremental.data.labels import LabelEncoder
from keras_incremental.data.labels import labels_from_onehot


def json_round_trip(encoder):
    config = json.loads(json.dumps(encoder.to_config()))
    return LabelEncoder.from_config(config)


def test_ints_in_order_of_first_appearance():
    encoder = LabelEncoder()

    assert encoder.partial_fit([5, 2, 5, 9, 2]) == [5, 2, 9]

    assert encoder.classes_ == [5, 2, 9]
    assert encoder.num_classes == 3
    assert len(encoder) == 3
    assert encoder.kind == "int"
    assert all(type(c) is int for c in encoder.classes_)


def test_strings_in_order_of_first_appearance():
    encoder = LabelEncoder()

    assert encoder.partial_fit(("dog", "cat", "dog")) == ["dog", "cat"]

    assert encoder.classes_ == ["dog", "cat"]
    assert encoder.kind == "str"


def test_bytes_differ_from_strings():
    encoder = LabelEncoder()

    assert encoder.partial_fit([b"a", b"b", b"a"]) == [b"a", b"b"]

    assert encoder.kind == "bytes"
    with pytest.raises(TypeError, match="encoder's classes are bytes"):
        encoder.transform(["a"])


def test_numpy_inputs_become_python_values():
    ints = LabelEncoder()
    assert ints.partial_fit(np.array([3, 1, 3], dtype=np.int32)) == [3, 1]
    assert ints.partial_fit(np.array([1, 4], dtype=np.uint8)) == [4]
    assert ints.partial_fit([np.int64(4), 7]) == [7]
    assert all(type(c) is int for c in ints.classes_)

    strings = LabelEncoder()
    assert strings.partial_fit(np.array(["b", "a", "b"])) == ["b", "a"]
    assert strings.partial_fit([np.str_("c")]) == ["c"]
    assert all(type(c) is str for c in strings.classes_)

    raw = LabelEncoder()
    assert raw.partial_fit(np.array([b"y", b"x"])) == [b"y", b"x"]
    assert all(type(c) is bytes for c in raw.classes_)

    objects = LabelEncoder()
    assert objects.partial_fit(np.array(["q", "p"], dtype=object)) == [
        "q",
        "p",
    ]


def test_whole_floats_are_ints():
    encoder = LabelEncoder([2, 0])

    assert encoder.partial_fit([2.0, np.float32(1.0)]) == [1]
    assert encoder.partial_fit(np.array([0.0, 3.0, -0.0])) == [3]

    assert encoder.classes_ == [2, 0, 1, 3]
    assert all(type(c) is int for c in encoder.classes_)
    np.testing.assert_array_equal(encoder.transform([3.0, 2]), [3, 0])


def test_indices_stable_across_partial_fit_calls():
    encoder = LabelEncoder()
    encoder.partial_fit(["cat", "dog"])
    before = encoder.transform(["dog", "cat", "dog"])

    assert encoder.partial_fit(["eel", "ant", "dog", "cat"]) == ["eel", "ant"]
    assert encoder.partial_fit(["cat"]) == []

    np.testing.assert_array_equal(
        encoder.transform(["dog", "cat", "dog"]), before
    )
    assert encoder.classes_ == ["cat", "dog", "eel", "ant"]
    np.testing.assert_array_equal(
        encoder.transform(["ant", "eel"]), np.array([3, 2])
    )


def test_constructor_classes():
    encoder = LabelEncoder(["b", "a", "b"])

    assert encoder.classes_ == ["b", "a"]
    assert LabelEncoder().classes_ == []
    assert LabelEncoder([]).classes_ == []
    assert LabelEncoder().kind is None


def test_classes_is_a_copy():
    encoder = LabelEncoder([1, 2])

    encoder.classes_.append(3)

    assert encoder.classes_ == [1, 2]


@pytest.mark.parametrize(
    "labels",
    [
        [4, 0, 9, 9, 4],
        ["x", "y", "z", "x"],
        [b"\x00", b"\xff", b"a"],
        np.array([10, 20, 10], dtype=np.int16),
    ],
)
def test_transform_inverse_transform_round_trip(labels):
    encoder = LabelEncoder()
    encoder.partial_fit(labels)

    indices = encoder.transform(labels)

    assert indices.dtype == np.int64
    assert indices.shape == (len(labels),)
    decoded = encoder.inverse_transform(indices)
    assert isinstance(decoded, list)
    expected = labels.tolist() if isinstance(labels, np.ndarray) else labels
    assert decoded == expected
    assert encoder.inverse_transform(list(indices)) == decoded


def test_transform_and_inverse_of_empty_input():
    encoder = LabelEncoder(["a"])

    result = encoder.transform([])

    assert result.dtype == np.int64
    assert result.shape == (0,)
    assert encoder.inverse_transform([]) == []
    assert encoder.inverse_transform(np.zeros((0,), np.int64)) == []


def test_transform_unseen_labels_names_them_and_the_known_classes():
    encoder = LabelEncoder(["cat", "dog"])

    with pytest.raises(ValueError, match=r"'emu', 'yak'.*'cat', 'dog'"):
        encoder.transform(["dog", "emu", "yak", "emu"])

    assert encoder.classes_ == ["cat", "dog"]


def test_transform_before_any_class():
    with pytest.raises(ValueError, match="no classes yet"):
        LabelEncoder().transform(["a"])


def test_transform_unseen_message_is_bounded():
    encoder = LabelEncoder(list(range(100)))

    with pytest.raises(ValueError, match=r"\(500 in all\)") as info:
        encoder.transform(list(range(100, 600)))

    assert "(100 in all)" in str(info.value)
    assert len(str(info.value)) < 600


@pytest.mark.parametrize(
    "labels, error, match",
    [
        ([], ValueError, "Received no labels"),
        (np.array([], dtype=np.int64), ValueError, "Received no labels"),
        ([1, None], ValueError, r"missing label.*labels\[1\]=None"),
        ([1.0, float("nan")], ValueError, r"missing label.*labels\[1\]=nan"),
        (np.array([0.0, np.nan]), ValueError, r"missing label.*labels\[1\]"),
        ([1, 2.5], ValueError, r"not a whole number.*labels\[1\]=2.5"),
        (np.array([1.0, 2.5]), ValueError, r"not a whole number.*\[1\]"),
        ([float("inf")], ValueError, "not a whole number"),
        ([True, False], TypeError, r"boolean label.*labels\[0\]=True"),
        ([1, np.bool_(True)], TypeError, r"boolean label.*labels\[1\]"),
        (np.array([True]), TypeError, "boolean label"),
        ([1, "1"], TypeError, r"mix.*int and str.*labels\[0\]=1.*'1'"),
        (["a", b"a"], TypeError, r"mix.*str and bytes"),
        (np.array([1, "a"], dtype=object), TypeError, "mix"),
        (np.array([[0, 1], [1, 0]]), ValueError, "labels_from_onehot"),
        (np.array([[3], [4]]), ValueError, r"reshape\(-1\).*shape \(2, 1\)"),
        ([[0, 1], [1, 0]], ValueError, "nested label.*labels_from_onehot"),
        (np.array(3), ValueError, "0-D"),
        ("cat", TypeError, r"wrap it in a list: \['cat'\]"),
        (7, TypeError, r"wrap it in a list: \[7\]"),
        ({"a", "b"}, TypeError, "of type set"),
        ([1, object()], TypeError, "label of type object"),
        ([1 + 2j], TypeError, "label of type complex"),
        (np.array([1 + 2j]), TypeError, "dtype complex128"),
    ],
)
def test_bad_labels_raise_and_change_nothing(labels, error, match):
    encoder = LabelEncoder([1, 2])

    with pytest.raises(error, match=match):
        encoder.partial_fit(labels)

    assert encoder.classes_ == [1, 2]
    assert encoder.kind == "int"
    np.testing.assert_array_equal(encoder.transform([2, 1]), [1, 0])


def test_bad_labels_are_rejected_before_any_class_is_added():
    encoder = LabelEncoder(["a"])

    with pytest.raises(ValueError, match=r"labels\[3\]=None"):
        encoder.partial_fit(["b", "c", "a", None])

    assert encoder.classes_ == ["a"]


@pytest.mark.parametrize(
    "known, labels",
    [
        (["a", "b"], [1, 2]),
        ([1, 2], ["1"]),
        ([1, 2], [b"1"]),
        ([b"a"], np.array(["a"])),
    ],
)
def test_labels_of_another_kind_than_known_classes(known, labels):
    encoder = LabelEncoder(known)
    kind = encoder.kind

    with pytest.raises(TypeError, match=f"encoder's classes are {kind}"):
        encoder.partial_fit(labels)
    with pytest.raises(TypeError, match=f"encoder's classes are {kind}"):
        encoder.transform(labels)

    assert encoder.classes_ == known


@pytest.mark.parametrize(
    "indices, error, match",
    [
        ([0, 3], ValueError, r"out of range.*\[0, 3\).*indices\[1\]=3"),
        ([-1], ValueError, r"out of range.*indices\[0\]=-1"),
        (np.array([5, 0, 7]), ValueError, r"indices\[0\]=5, indices\[2\]=7"),
        ([2**80], ValueError, "out of range"),
        ([0, 1.0], TypeError, r"not an integer.*indices\[1\]=1.0"),
        ([True], TypeError, "not an integer"),
        (np.array([0.0, 1.0]), TypeError, r"dtype float64.*argmax"),
        (np.array([True]), TypeError, "dtype bool"),
        (np.zeros((2, 3)), ValueError, r"argmax.*shape \(2, 3\)"),
        ("0", TypeError, "1-D list, tuple or NumPy array"),
        (["0"], TypeError, "not an integer"),
    ],
)
def test_bad_indices(indices, error, match):
    encoder = LabelEncoder(["a", "b", "c"])

    with pytest.raises(error, match=match):
        encoder.inverse_transform(indices)

    assert encoder.classes_ == ["a", "b", "c"]


def test_inverse_transform_on_an_empty_encoder():
    with pytest.raises(ValueError, match="has no classes yet"):
        LabelEncoder().inverse_transform([0])


@pytest.mark.parametrize(
    "classes, kind",
    [
        ([3, -1, 0, 2**70], "int"),
        (["cat", "", "é", "\x00", "a\ud800"], "str"),
        ([b"", b"\x00", b"\xff\xfe", b"a"], "bytes"),
    ],
)
def test_json_round_trip(classes, kind):
    encoder = LabelEncoder(classes)

    config = encoder.to_config()
    restored = json_round_trip(encoder)

    assert config["kind"] == kind
    assert restored.kind == kind
    assert restored.classes_ == classes
    assert [type(c) for c in restored.classes_] == [type(c) for c in classes]
    np.testing.assert_array_equal(
        restored.transform(classes), encoder.transform(classes)
    )
    assert restored.to_config() == config


def test_bytes_config_is_base64():
    config = LabelEncoder([b"\xff", b"ab"]).to_config()

    assert config == {"kind": "bytes", "classes": ["/w==", "YWI="]}


def test_json_round_trip_of_an_empty_encoder():
    restored = json_round_trip(LabelEncoder())

    assert restored.classes_ == []
    assert restored.kind is None
    assert restored.partial_fit(["a"]) == ["a"]


def test_restored_encoder_keeps_growing():
    encoder = LabelEncoder(["a", "b"])
    restored = json_round_trip(encoder)

    assert restored.partial_fit(["c", "a"]) == ["c"]

    assert restored.classes_ == ["a", "b", "c"]
    assert encoder.classes_ == ["a", "b"]


@pytest.mark.parametrize(
    "config, error, match",
    [
        ([1, 2], TypeError, "Expected `config` to be a dict"),
        ({"classes": [1]}, ValueError, r"lacks the key\(s\) \['kind'\]"),
        ({"kind": "float", "classes": [1.5]}, ValueError, "'kind'"),
        ({"kind": "int", "classes": "abc"}, TypeError, "to be a list"),
        ({"kind": "int", "classes": ["1"]}, TypeError, "of type str"),
        ({"kind": "int", "classes": [True]}, TypeError, "of type bool"),
        ({"kind": "str", "classes": [1]}, TypeError, "of type int"),
        ({"kind": "bytes", "classes": ["not base64!"]}, ValueError, "base64"),
        ({"kind": None, "classes": [1]}, ValueError, "no kind"),
        ({"kind": "str", "classes": ["a", "b", "a"]}, ValueError, "repeats"),
    ],
)
def test_bad_config(config, error, match):
    with pytest.raises(error, match=match):
        LabelEncoder.from_config(config)


def test_repr():
    assert repr(LabelEncoder(["a", "b"])) == "LabelEncoder(classes=['a', 'b'])"
    assert "(30 in all)" in repr(LabelEncoder(range(30)))


@pytest.mark.parametrize("dtype", [np.int64, np.float32, bool])
def test_labels_from_onehot(dtype):
    y = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=dtype)

    indices = labels_from_onehot(y)

    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, [1, 0, 2, 1])


def test_labels_from_onehot_of_nested_lists_and_empty_batches():
    np.testing.assert_array_equal(labels_from_onehot([[0, 1], [1, 0]]), [1, 0])
    assert labels_from_onehot(np.zeros((0, 4))).shape == (0,)


def test_labels_from_onehot_feeds_the_encoder():
    encoder = LabelEncoder()

    assert encoder.partial_fit(labels_from_onehot(np.eye(3)[[2, 0]])) == [2, 0]


@pytest.mark.parametrize(
    "y, error, match",
    [
        ([[0.2, 0.8]], ValueError, r"not one-hot.*y\[0\]=\[0.2, 0.8\]"),
        ([[1, 0], [1, 1]], ValueError, r"not one-hot: 1 of 2 rows.*y\[1\]"),
        ([[0, 0, 0]], ValueError, "not one-hot"),
        ([[2, 0]], ValueError, "not one-hot"),
        ([[np.nan, 1.0]], ValueError, "not one-hot"),
        (np.ones((3, 0)), ValueError, "not one-hot"),
        ([["0", "1"]], ValueError, "not one-hot: they are not numbers"),
        ([[1], [1, 0]], ValueError, "not one-hot: rows of different"),
        ([0, 1, 2], ValueError, r"2-D one-hot.*shape \(3,\)"),
        (np.zeros((2, 2, 2)), ValueError, r"shape \(2, 2, 2\)"),
        ("abc", TypeError, "Expected 2-D one-hot labels"),
        (5, TypeError, "Expected 2-D one-hot labels"),
    ],
)
def test_labels_from_onehot_rejects(y, error, match):
    with pytest.raises(error, match=match):
        labels_from_onehot(y)
