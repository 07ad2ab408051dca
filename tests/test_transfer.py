import io
import json
import zipfile

import h5py
import keras
import numpy as np
import pytest

import keras_incremental as ki
from keras_incremental.models.transfer import TransferReport


def stacked(head_units, inserted=False, features=4, hidden=6):
    """Input-Dense(a)-[Dense(new)]-Dense(b)-ExpandableDense(head)."""
    layers = [keras.Input((features,)), keras.layers.Dense(hidden, name="a")]
    if inserted:
        layers.append(keras.layers.Dense(hidden, name="new"))
    layers += [
        keras.layers.Dense(hidden, name="b"),
        ki.ExpandableDense(head_units, name="head"),
    ]
    return keras.Sequential(layers)


def randomize(model, seed=1):
    """Gives every weight distinct values (biases too, which start at 0)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))


def layer_values(model, name):
    return [np.array(v.numpy()) for v in model.get_layer(name).weights]


def all_values(model):
    return [np.array(v.numpy()) for v in model.weights]


def assert_same(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def saved_source(tmp_path):
    source = stacked(3)
    randomize(source)
    # A trained model: the file also holds the optimizer's variables.
    source.compile(optimizer="adam", loss="mse")
    source.fit(np.ones((4, 4)), np.ones((4, 3)), verbose=0)
    path = tmp_path / "stage1.keras"
    source.save(path)
    return source, path


def test_keras_file_into_model_with_inserted_layer(saved_source):
    source, path = saved_source
    target = stacked(5, inserted=True)
    new_before = layer_values(target, "new")
    head_before = layer_values(target, "head")

    report = ki.transfer_weights(str(path), target)

    assert_same(layer_values(target, "a"), layer_values(source, "a"))
    assert_same(layer_values(target, "b"), layer_values(source, "b"))
    assert_same(layer_values(target, "new"), new_before)
    kernel, bias = layer_values(target, "head")
    old_kernel, old_bias = layer_values(source, "head")
    np.testing.assert_array_equal(kernel[:, :3], old_kernel)
    np.testing.assert_array_equal(bias[:3], old_bias)
    np.testing.assert_array_equal(kernel[:, 3:], head_before[0][:, 3:])
    np.testing.assert_array_equal(bias[3:], head_before[1][3:])

    assert report.copied == ["a", "b"]
    assert report.missing == ["new"]
    assert report.skipped == {}
    assert report.unused == []
    assert report.grown == {
        "head": {
            "source_units": 3,
            "target_units": 5,
            "matched_by": "position",
            "columns": [[0, 0], [1, 1], [2, 2]],
            "new": [3, 4],
            "dropped": [],
        }
    }


def test_load_weights_by_ordinal_would_put_weights_wrong(saved_source):
    # The trap that `transfer_weights` avoids: `load_weights` matches the
    # n-th `Dense` to the n-th `Dense`, so `new` takes `b`'s weights.
    source, path = saved_source
    target = stacked(5, inserted=True)
    target.load_weights(path, skip_mismatch=True)
    assert_same(layer_values(target, "new"), layer_values(source, "b"))
    assert not np.array_equal(
        layer_values(target, "b")[0], layer_values(source, "b")[0]
    )


def test_head_columns_follow_class_names():
    source = stacked(3)
    randomize(source)
    target = stacked(4)
    fish_before = [value[..., 2] for value in layer_values(target, "head")]

    report = ki.transfer_weights(
        source,
        target,
        source_classes=["cat", "dog", "bird"],
        target_classes=["bird", "cat", "fish", "dog"],
    )

    old_kernel, old_bias = layer_values(source, "head")
    kernel, bias = layer_values(target, "head")
    for source_column, target_column in [(0, 1), (1, 3), (2, 0)]:
        np.testing.assert_array_equal(
            kernel[:, target_column], old_kernel[:, source_column]
        )
        assert bias[target_column] == old_bias[source_column]
    np.testing.assert_array_equal(kernel[:, 2], fish_before[0])
    assert bias[2] == fish_before[1]
    info = report.grown["head"]
    assert info["matched_by"] == "class name"
    assert info["columns"] == [[0, 1], [1, 3], [2, 0]]
    assert info["new"] == ["fish"]
    assert info["dropped"] == []


def test_class_names_reorder_same_width_and_drop_missing_classes():
    source = stacked(3)
    randomize(source)
    target = stacked(2)
    report = ki.transfer_weights(
        source,
        target,
        source_classes=["cat", "dog", "bird"],
        target_classes=["bird", "cat"],
    )
    old_kernel, _ = layer_values(source, "head")
    kernel, _ = layer_values(target, "head")
    np.testing.assert_array_equal(kernel[:, 0], old_kernel[:, 2])
    np.testing.assert_array_equal(kernel[:, 1], old_kernel[:, 0])
    assert report.grown["head"]["dropped"] == ["dog"]

    # Same width, same order: a plain copy.
    same = stacked(3)
    report = ki.transfer_weights(
        source, same, source_classes=[0, 1, 2], target_classes=[0, 1, 2]
    )
    assert "head" in report.copied
    assert_same(layer_values(same, "head"), layer_values(source, "head"))


def test_from_in_memory_model_matches_keras_file(saved_source):
    source, path = saved_source
    from_model = stacked(5, inserted=True)
    from_file = keras.models.clone_model(from_model)
    from_file.set_weights(from_model.get_weights())

    report_model = ki.transfer_weights(source, from_model)
    report_file = ki.transfer_weights(path, from_file)

    assert report_model.to_dict() == report_file.to_dict()
    assert_same(all_values(from_model), all_values(from_file))
    assert_same(layer_values(from_model, "a"), layer_values(source, "a"))


def test_smaller_head_without_names_and_other_mismatches_are_skipped():
    source = stacked(3)
    randomize(source)
    target = keras.Sequential(
        [
            keras.Input((5,)),  # `a` now has another input width.
            keras.layers.Dense(6, name="a"),
            keras.layers.Dense(6, name="b"),
            ki.ExpandableDense(2, name="head"),
            keras.layers.Dense(2, name="extra"),
        ]
    )
    before = all_values(target)
    report = ki.transfer_weights(source, target)
    assert report.copied == ["b"]
    assert set(report.skipped) == {"a", "head"}
    assert "(5, 6)" in report.skipped["a"]
    assert "class names" in report.skipped["head"]
    assert report.missing == ["extra"]
    assert_same(layer_values(target, "a"), before[0:2])
    assert_same(layer_values(target, "head"), before[4:6])


def test_unused_layers_nested_models_and_selection():
    source = keras.Sequential(
        [
            keras.Input((4,)),
            keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(6, name="a")],
                name="body",
            ),
            keras.layers.Dense(6, name="old"),
            ki.ExpandableDense(3, name="head"),
        ]
    )
    randomize(source)
    target = stacked(3)  # `a` at the top level now; no `old`; no `b`.
    before = all_values(target)

    report = ki.transfer_weights(source, target, layers=["a"])
    assert report.copied == ["a"]
    assert report.missing == [] and report.grown == {}
    assert sorted(report.unused) == ["head", "old"]
    assert_same(layer_values(target, "b"), before[2:4])
    assert_same(layer_values(target, "head"), before[4:6])

    report = ki.transfer_weights(source, target)
    assert report.missing == ["b"]
    assert report.unused == ["old"]
    assert report.copied == ["a", "head"]


def test_inner_layers_of_composite_layers_transfer(tmp_path):
    def attention_model(units):
        x = keras.Input((2, 4))
        h = keras.layers.MultiHeadAttention(2, 2, name="attention")(x, x)
        return keras.Model(x, keras.layers.Dense(units, name="head")(h))

    source = attention_model(2)
    randomize(source)
    source.save(tmp_path / "attention.keras")
    target = attention_model(3)
    report = ki.transfer_weights(tmp_path / "attention.keras", target)
    assert sorted(report.copied) == [
        "attention_output",
        "key",
        "query",
        "value",
    ]
    assert list(report.grown) == ["head"]
    assert_same(
        layer_values(target, "attention"), layer_values(source, "attention")
    )


def test_report_str_and_json(saved_source):
    _, path = saved_source
    target = stacked(5, inserted=True)
    report = ki.transfer_weights(
        path,
        target,
        source_classes=np.array(["x", "y", "z"]),
        target_classes=["z", "q", "x", "r", "y"],
    )
    assert isinstance(report, TransferReport)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["grown"]["head"]["new"] == ["q", "r"]
    text = str(report)
    lines = text.splitlines()
    assert lines[0].startswith("TransferReport: 2 copied, 1 grown")
    assert any(line.split()[:2] == ["new", "missing"] for line in lines)
    assert any(line.split()[:2] == ["head", "grown"] for line in lines)


def test_bad_inputs_raise_and_leave_model_unchanged(saved_source, tmp_path):
    source, path = saved_source
    target = stacked(4, inserted=True)
    before = all_values(target)
    not_zip = tmp_path / "broken.keras"
    not_zip.write_text("not a zip")
    cases = [
        (ValueError, "file not found", dict(source=tmp_path / "no.keras")),
        (ValueError, "`.keras` file", dict(source=tmp_path / "w.weights.h5")),
        (ValueError, "not a zip", dict(source=not_zip)),
        (TypeError, "`keras.Model`", dict(source=42)),
        (TypeError, "`keras.Model`", dict(model="model")),
        (
            ValueError,
            "has 4 units",
            dict(source_classes=list("abc"), target_classes=list("abcde")),
        ),
        (
            ValueError,
            "has 3 units",
            dict(source_classes=list("ab"), target_classes=list("abcd")),
        ),
        (
            ValueError,
            "more than once",
            dict(source_classes=list("abc"), target_classes=list("abca")),
        ),
        (
            ValueError,
            "more than once",
            dict(source_classes=list("aab"), target_classes=list("abcd")),
        ),
        (ValueError, "or neither", dict(target_classes=list("abcd"))),
        (TypeError, "list of class names", dict(source_classes="abc")),
        (ValueError, "No layer named", dict(layers=["nope"])),
        (ValueError, "not part of model", dict(head=keras.layers.Dense(2))),
        (ValueError, "No layer with weights", dict(head="nope")),
        (TypeError, "Expected `head`", dict(head=3)),
    ]
    for error, message, kwargs in cases:
        arguments = {"source": path, "model": target, **kwargs}
        with pytest.raises(error, match=message):
            ki.transfer_weights(**arguments)
        assert_same(all_values(target), before)


def test_unbuilt_models_are_refused(saved_source):
    _, path = saved_source
    unbuilt = keras.Sequential([keras.layers.Dense(2, name="a")])
    with pytest.raises(ValueError, match="not built"):
        ki.transfer_weights(path, unbuilt)
    with pytest.raises(ValueError, match="not built"):
        ki.transfer_weights(unbuilt, stacked(3))


def test_keras_file_is_read_without_deserialising(saved_source, tmp_path):
    # A layer class the reader cannot import does not matter: only the
    # weights archive is read.
    _, path = saved_source
    edited = tmp_path / "edited.keras"
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(edited, "w") as new:
        for item in old.namelist():
            data = old.read(item)
            if item == "config.json":
                data = data.replace(b"ExpandableDense", b"NoSuchLayer")
            new.writestr(item, data)
    target = stacked(3)
    report = ki.transfer_weights(edited, target)
    assert report.copied == ["a", "b", "head"]


def test_archive_without_h5_weights_is_refused(saved_source, tmp_path):
    _, path = saved_source
    other = tmp_path / "npz.keras"
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(other, "w") as new:
        new.writestr("config.json", old.read("config.json"))
        new.writestr("model.weights.npz", b"")
    target = stacked(3)
    before = all_values(target)
    with pytest.raises(ValueError, match="model.weights.h5"):
        ki.transfer_weights(other, target)
    assert_same(all_values(target), before)


def test_no_layer_matched_by_name_is_an_error(tmp_path):
    def auto_named():
        return keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(6), keras.layers.Dense(3)]
        )

    source = auto_named()
    source.save(tmp_path / "source.keras")
    target = auto_named()  # `dense_2`, `dense_3` against `dense`, `dense_1`
    before = [np.array(w) for w in target.get_weights()]
    with pytest.raises(ValueError, match="No layer of model .* matched"):
        ki.transfer_weights(tmp_path / "source.keras", target)
    for a, b in zip(before, target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _edited_weights(path, edited, edit):
    """Copies the `.keras` at `path` to `edited`, editing its weights file."""
    with zipfile.ZipFile(path) as old:
        members = {name: old.read(name) for name in old.namelist()}
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "r+") as file:
        edit(file)
    members["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(edited, "w") as new:
        for name, data in members.items():
            new.writestr(name, data)
    return edited


def test_crafted_weights_files_are_refused(saved_source, tmp_path):
    _, path = saved_source
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 4096)

    def external(file):
        variables = file["layers/dense/vars"]
        shape = variables["0"].shape
        del variables["0"]
        variables.create_dataset(
            "0", shape=shape, dtype="float32", external=[(secret, 0, 4096)]
        )

    def soft_link(file):
        file["layers/alias"] = h5py.SoftLink("/layers/dense")

    def cycle(file):
        file["layers/dense/loop"] = file["layers"]

    cases = [
        (external, "external storage"),
        (soft_link, "SoftLink"),
        (cycle, "two paths"),
    ]
    target = stacked(3)
    before = all_values(target)
    for index, (edit, problem) in enumerate(cases):
        crafted = _edited_weights(path, tmp_path / f"c{index}.keras", edit)
        with pytest.raises(ValueError, match=problem) as info:
            ki.transfer_weights(crafted, target)
        assert str(crafted) in str(info.value)
        assert_same(all_values(target), before)


def test_bfloat16_weights_transfer_bit_exactly(tmp_path):
    # Keras saves bfloat16 as 2-byte opaque HDF5 data with a marker.
    def model():
        layer = keras.layers.Dense(4, dtype="bfloat16", name="d")
        return keras.Sequential([keras.Input((3,)), layer])

    source = model()
    randomize(source)
    source.save(tmp_path / "bf16.keras")
    target = model()
    report = ki.transfer_weights(tmp_path / "bf16.keras", target)
    assert len(report.copied) == 1
    assert_same(all_values(target), all_values(source))
