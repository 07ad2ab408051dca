"""Tests for `keras_incremental.utils`: the helpers every part shares."""

import numpy as np
import pytest

from keras_incremental.utils.messages import PREVIEW_ITEMS
from keras_incremental.utils.messages import preview

pytestmark = pytest.mark.backend_independent


def test_preview_shows_a_short_list_whole():
    assert preview([1, "a", b"b"]) == "[1, 'a', b'b']"
    assert preview(()) == "[]"
    assert preview(range(PREVIEW_ITEMS)) == repr(list(range(PREVIEW_ITEMS)))


def test_preview_cuts_a_long_list_and_counts_it():
    assert (
        preview(range(30)) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (30 in all)]"
    )
    assert preview(range(30), limit=2) == "[0, 1, ... (30 in all)]"
    assert preview(range(11)).endswith(", 9, ... (11 in all)]")
    text = preview(np.arange(500))
    assert "(500 in all)" in text and len(text) < 200


def test_preview_shows_other_values_as_their_repr():
    assert preview("cats") == "'cats'"
    assert preview(b"cats") == "b'cats'"
    assert preview({"a": 1}) == "{'a': 1}"
    assert preview(3) == "3"
    assert preview(None) == "None"
    assert preview(np.array(2.5)) == repr(np.array(2.5))


def test_preview_cuts_a_long_text_at_width():
    text = preview({"key": "x" * 500}, width=20)
    assert text == repr({"key": "x" * 500})[:20] + "...(cut)"
    assert preview({"a": 1}, width=20) == "{'a': 1}"
    assert preview(list(range(30)), width=10) == "[0, 1, 2, ...(cut)"


def test_preview_names_a_value_too_deep_to_show():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    assert preview({"deep": deep}) == "<a dict nested too deep to show>"
