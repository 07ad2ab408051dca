"""Tests for `keras_incremental.utils`: the helpers every part shares."""

import os
import pathlib

import numpy as np
import pytest

from keras_incremental.saving import checkpoint
from keras_incremental.saving import files
from keras_incremental.utils.checks import check_path
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


class _BytesPath:
    def __fspath__(self):
        return os.fsencode("run/model.keras")


def test_check_path_gives_a_string():
    assert check_path("a/b", "where") == "a/b"
    assert check_path(pathlib.Path("a", "b.json"), "report", ".json") == (
        os.path.join("a", "b.json")
    )
    assert check_path(_BytesPath(), "source", ".keras") == "run/model.keras"


@pytest.mark.parametrize(
    "path, kwargs, message",
    [
        (
            3,
            {},
            "Expected `where` to be a path (a string or `os.PathLike`). "
            "Received: where=3 of type int",
        ),
        (
            None,
            {"suffix": ".json"},
            "Expected `where` to be a path (a string or `os.PathLike`) "
            "ending in '.json'. Received: where=None of type NoneType",
        ),
        (
            b"a/b",
            {"folder": True},
            "Expected `where` to be a folder path (a string or "
            "`os.PathLike`). Received: where=b'a/b' of type bytes",
        ),
    ],
)
def test_check_path_refuses_what_is_not_a_path(path, kwargs, message):
    with pytest.raises(TypeError) as info:
        check_path(path, "where", **kwargs)
    assert str(info.value) == message


def test_check_path_refuses_another_suffix():
    with pytest.raises(ValueError) as info:
        check_path("r.txt", "report", ".json")
    assert str(info.value) == (
        "Expected `report` to be a `.json` file (a path ending in '.json'). "
        "Received: report='r.txt'"
    )
    with pytest.raises(ValueError, match=r"report='r.txt'\. Write JSON\.$"):
        check_path(pathlib.Path("r.txt"), "report", ".json", hint="Write JSON.")


def test_path_checks_of_the_package_are_check_path():
    # The checkpoint, `.keras` source and folder checks give its messages.
    with pytest.raises(
        ValueError, match="Expected `checkpoint` to be a `.keras"
    ):
        checkpoint.check_checkpoint_path("stages.h5")
    with pytest.raises(ValueError, match="Received: path='stages.h5'"):
        checkpoint.check_checkpoint_path("stages.h5", argument="path")
    with pytest.raises(TypeError, match="Expected `checkpoint` to be a path"):
        checkpoint.check_checkpoint_path(3)
    with pytest.raises(ValueError, match="Received: source='m.h5'. Such a"):
        files.keras_file_path("m.h5", "Load it yourself.")
    with pytest.raises(TypeError, match="`source` to be a path"):
        files.keras_file_path(3, "Load it yourself.")
    with pytest.raises(TypeError, match="`folder` to be a folder path"):
        files.remove_stale_partials(3)
