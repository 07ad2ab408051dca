"""The shared argument checks: what they accept, return and refuse."""

import fractions
import json
import math

import numpy as np
import pytest

from keras_incremental.utils.checks import check_bool
from keras_incremental.utils.checks import check_integer
from keras_incremental.utils.checks import check_number
from keras_incremental.utils.checks import check_unit_count

pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, 0.0),
        (2, 2.0),
        (0.5, 0.5),
        (np.float64(0.25), 0.25),
        (np.float32(0.5), 0.5),
        (np.float16(1.5), 1.5),
        (np.int64(5), 5.0),
        (np.uint8(7), 7.0),
        (fractions.Fraction(1, 4), 0.25),
    ],
)
def test_check_number_returns_a_python_float(value, expected):
    result = check_number(value, "weight")
    assert type(result) is float
    assert result == expected
    json.dumps(result)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_check_number_refuses_non_finite_values(value):
    message = (
        "Received an invalid value for `weight`, expected a finite number "
        f">= 0. Received: weight={value}"
    )
    for given in (value, np.float64(value), np.float32(value)):
        with pytest.raises(ValueError) as caught:
            check_number(given, "weight", minimum=0)
        assert str(caught.value) == message


def test_check_number_message_example():
    with pytest.raises(ValueError) as caught:
        check_number(float("nan"), "weight", minimum=0)
    assert str(caught.value) == (
        "Received an invalid value for `weight`, expected a finite number "
        ">= 0. Received: weight=nan"
    )


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_])
def test_check_number_refuses_bools(value):
    with pytest.raises(TypeError) as caught:
        check_number(value, "weight", minimum=0)
    message = str(caught.value)
    assert "`weight`" in message
    assert f"Received: weight={value!r} of type" in message


@pytest.mark.parametrize("value", ["1.0", None, [1.0], np.array([1.0]), 1j])
def test_check_number_refuses_what_is_not_a_real_number(value):
    with pytest.raises(TypeError, match="expected a finite number"):
        check_number(value, "weight")


def test_check_number_huge_integers_are_not_finite():
    with pytest.raises(ValueError, match=r"Received: weight=10{400}"):
        check_number(10**400, "weight")
    with pytest.raises(ValueError, match=r"Received: weight=-10{400}"):
        check_number(-(10**400), "weight")


@pytest.mark.parametrize(
    "bounds, inside, outside, words",
    [
        ({"minimum": 0}, [0, 0.0, 1e300], [-1e-300, -1], ">= 0"),
        (
            {"minimum": 0, "include_minimum": False},
            [1e-300, 3],
            [0, 0.0, -1],
            "> 0",
        ),
        ({"maximum": 1}, [1, -5], [1.0000001], "<= 1"),
        ({"maximum": 1, "include_maximum": False}, [0.999], [1], "< 1"),
        ({"minimum": 0, "maximum": 1}, [0, 0.5, 1], [-0.1, 1.5], "in [0, 1]"),
        (
            {
                "minimum": 0,
                "maximum": 1,
                "include_minimum": False,
                "include_maximum": False,
            },
            [0.5],
            [0, 1],
            "in (0, 1)",
        ),
        ({}, [-1e300, 0, 1e300], [], ""),
    ],
)
def test_check_number_bounds(bounds, inside, outside, words):
    for value in inside:
        assert check_number(value, "x", **bounds) == value
    for value in outside:
        with pytest.raises(ValueError) as caught:
            check_number(value, "x", **bounds)
        assert str(caught.value) == (
            f"Received an invalid value for `x`, expected a finite number"
            f"{' ' + words if words else ''}. Received: x={value}"
        )


@pytest.mark.parametrize(
    "value",
    [0, 5, 2**70, np.int64(5), np.int32(5), np.uint64(5), np.int8(5)],
)
def test_check_integer_returns_a_python_int(value):
    result = check_integer(value, "samples", 0)
    assert type(result) is int
    assert result == int(value)
    json.dumps(result)


@pytest.mark.parametrize(
    "value", [True, False, np.True_, 5.0, np.float64(5), math.nan, "5", None]
)
def test_check_integer_refuses_what_is_not_an_integer(value):
    with pytest.raises(TypeError) as caught:
        check_integer(value, "samples", 1)
    assert str(caught.value) == (
        "Received an invalid value for `samples`, expected an integer >= 1. "
        f"Received: samples={value!r} of type {type(value).__name__}"
    )


def test_check_integer_bounds():
    assert check_integer(-(2**70), "seed") == -(2**70)
    assert check_integer(2**63 - 1, "seed", 0, maximum=2**63 - 1) == 2**63 - 1
    with pytest.raises(ValueError) as caught:
        check_integer(np.int64(-1), "seed", 0)
    assert str(caught.value) == (
        "Received an invalid value for `seed`, expected an integer >= 0. "
        "Received: seed=-1"
    )
    with pytest.raises(ValueError, match=r"in \[0, 9\]\. Received: seed=10$"):
        check_integer(10, "seed", 0, maximum=9)
    with pytest.raises(ValueError, match=r"<= 9\. Received: seed=10$"):
        check_integer(10, "seed", maximum=9)


def test_check_unit_count_is_check_integer_with_a_minimum():
    assert check_unit_count(np.int64(3), "units", 1) == 3
    assert type(check_unit_count(np.int64(3), "units", 1)) is int
    with pytest.raises(ValueError) as caught:
        check_unit_count(-3, "units", 1)
    assert str(caught.value) == (
        "Received an invalid value for `units`, expected an integer >= 1. "
        "Received: units=-3"
    )
    with pytest.raises(TypeError) as caught:
        check_unit_count(True, "units", 1)
    assert str(caught.value) == (
        "Received an invalid value for `units`, expected an integer >= 1. "
        "Received: units=True of type bool"
    )


@pytest.mark.parametrize(
    "value, expected",
    [(True, True), (False, False), (np.True_, True), (np.False_, False)],
)
def test_check_bool_returns_a_python_bool(value, expected):
    result = check_bool(value, "nme")
    assert type(result) is bool
    assert result is expected


@pytest.mark.parametrize("value", [1, 0, np.int64(1), "yes", "", None, 1.0])
def test_check_bool_refuses_what_is_not_a_bool(value):
    with pytest.raises(TypeError) as caught:
        check_bool(value, "nme")
    assert str(caught.value) == (
        "Received an invalid value for `nme`, expected a boolean (True or "
        f"False). Received: nme={value!r} of type {type(value).__name__}"
    )
