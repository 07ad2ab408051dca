"""Tests for `keras_incremental.saving.serving.export_for_serving`.

The main export is loaded back in a fresh Python process (without this
package), as TensorFlow Serving would load it, and inspected with
`saved_model_cli`; both run side by side in one module fixture.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_incremental as ki
from keras_incremental.saving.serving import export_for_serving
from keras_incremental.saving.serving import exported_versions

NAMES = ["cat", "dog", "bird"]

LOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    version_dir, inputs_path, results_path = sys.argv[1:]
    x = np.load(inputs_path, allow_pickle=False)
    loaded = tf.saved_model.load(version_dir)
    answer = loaded.signatures["serving_default"](inputs=tf.constant(x))
    np.savez(
        results_path,
        probabilities=answer["probabilities"].numpy(),
        class_ids=answer["class_ids"].numpy(),
        classes=np.array([c.decode() for c in answer["classes"].numpy()]),
        dtypes=np.array(
            [answer[key].dtype.name for key in ("probabilities",
             "class_ids", "classes")]
        ),
    )
    """
)


def tiny_model(units=3, activation=None):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="body"),
            ki.ExpandableDense(units, activation=activation, name="head"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=activation is None
        ),
    )
    return model


def inputs(n=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4)).astype("float32")


def softmax(logits):
    logits = np.asarray(logits, dtype="float64")
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def tree(folder):
    """Every path under `folder`, relative to it, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def saved_model_cli():
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.isfile(script):
        return [script]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def quiet_env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def serve(version_dir, x):
    loaded = tf.saved_model.load(version_dir)
    answer = loaded.signatures["serving_default"](inputs=tf.constant(x))
    return {key: value.numpy() for key, value in answer.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("serving")
    model = tiny_model()
    x = inputs()
    expected = model.predict(x, verbose=0)
    version_dir = export_for_serving(model, base / "animals", NAMES)
    np.save(base / "x.npy", x)
    results = base / "results.npz"
    load = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LOAD_SCRIPT,
            version_dir,
            str(base / "x.npy"),
            str(results),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=quiet_env(),
    )
    show = subprocess.Popen(
        saved_model_cli() + ["show", "--dir", version_dir, "--all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=quiet_env(),
    )
    load_out, load_err = load.communicate(timeout=120)
    show_out, show_err = show.communicate(timeout=120)
    assert load.returncode == 0, load_out + load_err
    assert show.returncode == 0, show_out + show_err
    with np.load(results, allow_pickle=False) as answer:
        answer = dict(answer)
    return types.SimpleNamespace(
        base=base / "animals",
        version_dir=version_dir,
        expected=expected,
        answer=answer,
        cli=show_out,
    )


def test_fresh_process_matches_predict(exported):
    assert exported.version_dir == os.path.join(exported.base, "1")
    answer = exported.answer
    assert list(answer["dtypes"]) == ["float32", "int64", "string"]
    np.testing.assert_allclose(
        answer["probabilities"], softmax(exported.expected), atol=1e-6
    )
    np.testing.assert_allclose(answer["probabilities"].sum(-1), 1, atol=1e-6)
    ids = exported.expected.argmax(-1)
    np.testing.assert_array_equal(answer["class_ids"], ids)
    assert list(answer["classes"]) == [NAMES[i] for i in ids]


@pytest.mark.backend_independent
def test_saved_model_cli_shows_the_predict_signature(exported):
    cli = exported.cli
    assert "signature_def['serving_default']" in cli
    assert "Method name is: tensorflow/serving/predict" in cli
    assert "inputs['inputs']" in cli
    for output, dtype, shape in [
        ("probabilities", "DT_FLOAT", r"\(-1, 3\)"),
        ("class_ids", "DT_INT64", r"\(-1\)"),
        ("classes", "DT_STRING", r"\(-1\)"),
    ]:
        pattern = (
            rf"outputs\['{output}'\] tensor_info:\s+"
            rf"dtype: {dtype}\s+shape: {shape}\s"
        )
        assert re.search(pattern, cli), (output, cli)
    assert re.search(r"dtype: DT_FLOAT\s+shape: \(-1, 4\)", cli)


@pytest.mark.backend_independent
def test_softmax_head_is_not_softmaxed_twice(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model(activation="softmax")
    x = inputs()
    version_dir = export_for_serving(model, tmp_path, NAMES)
    answer = serve(version_dir, x)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-6)
    # Softmax applied twice would flatten the probabilities towards 1/3.
    assert not np.allclose(answer["probabilities"], softmax(expected))


@pytest.mark.backend_independent
def test_versions_count_up_and_follow_growth(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x = inputs()
    first = export_for_serving(model, tmp_path, NAMES)
    ki.expand(model, 2)
    grown = NAMES + ["fish", "frog"]
    second = export_for_serving(model, tmp_path, grown)
    assert first == os.path.join(tmp_path, "1")
    assert second == os.path.join(tmp_path, "2")
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]

    old = serve(first, x)
    new = serve(second, x)
    assert old["probabilities"].shape == (len(x), 3)
    assert new["probabilities"].shape == (len(x), 5)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(
        new["probabilities"], softmax(expected), atol=1e-6
    )
    ids = expected.argmax(-1)
    np.testing.assert_array_equal(new["class_ids"], ids)
    assert [name.decode() for name in new["classes"]] == [grown[i] for i in ids]

    # An explicit version leaves gaps; `None` continues after the largest.
    assert export_for_serving(model, tmp_path, grown, version=7).endswith("7")
    assert export_for_serving(model, tmp_path, grown).endswith("8")


def test_export_after_training_and_growth(tmp_path):
    # The staged workflow: fit, grow the head, fit again, export. The
    # optimizer's state has been carried over to the grown head by then.
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x = inputs(32)
    model.fit(x, np.arange(32) % 3, epochs=1, verbose=0)
    ki.expand(model, 2)
    model.fit(x, np.arange(32) % 5, epochs=1, verbose=0)
    names = NAMES + ["fish", "frog"]
    answer = serve(export_for_serving(model, tmp_path, names), x)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(
        answer["probabilities"], softmax(expected), atol=1e-6
    )
    np.testing.assert_array_equal(answer["class_ids"], expected.argmax(-1))


def test_class_names_from_classes_attribute(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x = inputs(6)
    inc = ki.IncrementalModel()
    inc.prepare(x, np.array(["rose", "tulip", "iris", "rose", "iris", "tulip"]))
    assert sorted(inc.classes_) == ["iris", "rose", "tulip"]
    version_dir = export_for_serving(model, tmp_path, inc)
    answer = serve(version_dir, x)
    expected = [inc.classes_[i] for i in answer["class_ids"]]
    assert [name.decode() for name in answer["classes"]] == expected

    labelled = types.SimpleNamespace(classes_=[10, 20, 30])
    version_dir = export_for_serving(model, tmp_path, labelled)
    answer = serve(version_dir, x)
    expected = [str(10 * (i + 1)).encode() for i in answer["class_ids"]]
    assert list(answer["classes"]) == expected


@pytest.mark.backend_independent
def test_default_names_are_the_indices(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x = inputs()
    answer = serve(export_for_serving(model, tmp_path), x)
    assert list(answer["classes"]) == [
        str(i).encode() for i in answer["class_ids"]
    ]


@pytest.mark.backend_independent
def test_warmup_requests_are_written_and_parse(tmp_path):
    prediction_log_pb2 = pytest.importorskip(
        "tensorflow_serving.apis.prediction_log_pb2"
    )
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x = inputs(3)
    version_dir = export_for_serving(
        model, tmp_path / "animals", NAMES, warmup_inputs=x
    )
    path = os.path.join(
        version_dir, "assets.extra", "tf_serving_warmup_requests"
    )
    assert os.path.isfile(path)
    loaded = tf.saved_model.load(version_dir)
    signature = loaded.signatures["serving_default"]
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    assert len(records) == len(x)
    for sample, record in zip(x, records, strict=True):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        assert request.model_spec.name == "animals"
        assert list(request.inputs) == ["inputs"]
        value = tf.make_ndarray(request.inputs["inputs"])
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, sample[None])
        # The request runs as it stands against the exported signature.
        answer = signature(**{"inputs": tf.constant(value)})
        assert answer["probabilities"].shape == (1, 3)


@pytest.mark.backend_independent
def test_warmup_without_serving_api_raises_import_error(tmp_path, monkeypatch):
    # Blocks the import even where another test imported it already.
    for name in list(sys.modules):
        if name.startswith("tensorflow_serving."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorflow_serving", None)
    model = tiny_model()
    with pytest.raises(ImportError, match="pip install tensorflow-serving-api"):
        export_for_serving(model, tmp_path, NAMES, warmup_inputs=inputs(2))
    assert tree(tmp_path) == []


@pytest.mark.backend_independent
def test_tfsm_layer_wraps_the_export(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x = inputs()
    version_dir = export_for_serving(model, tmp_path, NAMES)
    layer = keras.layers.TFSMLayer(version_dir, call_endpoint="serving_default")
    answer = layer(x)
    assert sorted(answer) == ["class_ids", "classes", "probabilities"]
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(
        answer["probabilities"], softmax(expected), atol=1e-6
    )
    np.testing.assert_array_equal(answer["class_ids"], expected.argmax(-1))
    assert answer["classes"].dtype == tf.string


def bad_calls(tmp_path):
    """`(kwargs, error, match)` triples, each for a call that must fail."""
    return [
        (
            dict(class_names=["cat", "dog"]),
            ValueError,
            r"3 output units\. Received 2 class names",
        ),
        (
            dict(class_names=[]),
            ValueError,
            r"3 output units\. Received 0 class names",
        ),
        (
            dict(class_names=["cat", "dog", "cat"]),
            ValueError,
            r"Received duplicates \['cat'\]",
        ),
        (
            dict(class_names=["1", 1, "2"]),
            ValueError,
            r"Received duplicates \['1'\]",
        ),
        (dict(class_names="cat"), TypeError, "list of names"),
        (
            dict(class_names=["a", 1.5, "c"]),
            TypeError,
            "string, bytes or an integer",
        ),
        (
            dict(export_dir=tmp_path / "file.txt"),
            ValueError,
            r"is a file; expected `export_dir` to be a folder",
        ),
        (
            dict(version=1),
            ValueError,
            r"Version 1 exists already .*Pick another `version`.*remove",
        ),
        (
            dict(version=4),
            ValueError,
            r"Version 4 exists already at '.*0004'",
        ),
        (dict(version=0), ValueError, "positive integer"),
        (dict(version="3"), TypeError, "positive integer"),
        (dict(version=True), TypeError, "positive integer"),
        (
            dict(warmup_inputs=np.zeros((2, 5), "float32")),
            ValueError,
            r"shaped like the model's input \(None, 4\)",
        ),
        (
            dict(model=keras.Sequential([keras.layers.Dense(3)])),
            ValueError,
            "is not built",
        ),
        (
            dict(model=tiny_model(units=0), class_names=None),
            ValueError,
            "has 0 output units",
        ),
        (dict(model="model"), TypeError, r"Expected a `keras\.Model`"),
        (
            dict(export_dir=tmp_path / "new", class_names=["cat"]),
            ValueError,
            "Received 1 class names",
        ),
    ]


@pytest.mark.backend_independent
def test_bad_input_raises_and_writes_nothing(tmp_path):
    base = tmp_path / "models"
    export_for_serving(tiny_model(), base, NAMES)
    os.makedirs(base / "0004")  # Version 4, as TensorFlow Serving reads it.
    (tmp_path / "file.txt").write_text("not a folder")
    (base / "1" / "marker").write_text("first export")
    before = tree(tmp_path)
    model = tiny_model()
    for kwargs, error, match in bad_calls(tmp_path):
        arguments = dict(model=model, export_dir=base, class_names=NAMES)
        arguments.update(kwargs)
        with pytest.raises(error, match=match):
            export_for_serving(**arguments)
        assert tree(tmp_path) == before, kwargs
    assert (tmp_path / "file.txt").read_text() == "not a folder"
    assert (base / "1" / "marker").read_text() == "first export"


@pytest.mark.backend_independent
def test_failed_write_removes_the_partial_folder(tmp_path, monkeypatch):
    model = tiny_model()
    export_for_serving(model, tmp_path, NAMES)
    before = tree(tmp_path)

    def broken_write_out(self, filepath, **kwargs):
        os.makedirs(os.path.join(filepath, "variables"))
        with open(os.path.join(filepath, "saved_model.pb"), "w") as file:
            file.write("half")
        raise OSError("disk full")

    # `ExportArchive()` makes an object of a class for the backend.
    archive_class = type(keras.export.ExportArchive())
    monkeypatch.setattr(archive_class, "write_out", broken_write_out)
    with pytest.raises(OSError, match="disk full"):
        export_for_serving(model, tmp_path, NAMES)
    assert tree(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["1"]
    # A base folder that this call made goes too.
    with pytest.raises(OSError, match="disk full"):
        export_for_serving(model, tmp_path / "new", NAMES)
    assert tree(tmp_path) == before


def nested_softmax_model(kind):
    """A functional model whose softmax is inside a nested model."""
    if kind == "dense":
        end = [keras.layers.Dense(3, activation="softmax")]
    elif kind == "head":
        end = [ki.ExpandableDense(3, activation="softmax", name="head")]
    elif kind == "layer":
        end = [keras.layers.Dense(3), keras.layers.Softmax()]
    elif kind == "dropout":
        # An adopted softmax `Dense` may be followed by such layers.
        end = [
            keras.layers.Dense(3, activation="softmax"),
            keras.layers.Dropout(0.5),
            keras.layers.Activation("linear"),
        ]
    else:
        end = [keras.layers.Dense(3), keras.layers.Activation("softmax")]
    inner = keras.Sequential(
        [keras.layers.Dense(8, activation="relu")] + end, name="inner"
    )
    if kind == "two_deep":
        inner = keras.Sequential([inner], name="outer")
    inputs_ = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="relu")(inputs_)
    return keras.Model(inputs_, inner(hidden))


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "kind", ["dense", "head", "layer", "dropout", "two_deep"]
)
def test_softmax_inside_a_nested_model_is_not_applied_twice(tmp_path, kind):
    keras.utils.set_random_seed(0)
    model = nested_softmax_model(kind)
    x = inputs()
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(expected.sum(-1), 1, atol=1e-6)
    answer = serve(export_for_serving(model, tmp_path, NAMES), x)
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(answer["class_ids"], expected.argmax(-1))


@pytest.mark.backend_independent
def test_logits_inside_a_nested_model_are_softmaxed(tmp_path):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.layers.Dense(3)], name="inner")
    inputs_ = keras.Input((4,))
    model = keras.Model(inputs_, inner(keras.layers.Dense(6)(inputs_)))
    x = inputs()
    answer = serve(export_for_serving(model, tmp_path, NAMES), x)
    expected = softmax(model.predict(x, verbose=0))
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)


@pytest.mark.backend_independent
def test_next_version_follows_numeric_entries_of_any_kind(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    (tmp_path / "1").write_text("a stray file")
    os.makedirs(tmp_path / "7abc")
    os.makedirs(tmp_path / "v9")
    (tmp_path / "12.txt").write_text("not a version")
    (tmp_path / ".partial-foo").write_text("not ours")
    first = export_for_serving(model, tmp_path, NAMES)
    assert first == os.path.join(tmp_path, "2")
    os.symlink(tmp_path / "nowhere", tmp_path / "5")  # A dangling link.
    assert export_for_serving(model, tmp_path, NAMES).endswith("6")
    (tmp_path / "0009").write_text("a file")
    assert export_for_serving(model, tmp_path, NAMES).endswith("10")
    assert (tmp_path / "1").read_text() == "a stray file"
    assert sorted(exported_versions(tmp_path)) == [2, 6, 10]


class CountingLayer(keras.layers.Layer):
    """Counts its calls, to tell whether a model was traced."""

    calls = 0

    def call(self, inputs):
        CountingLayer.calls += 1
        return inputs


@pytest.mark.backend_independent
def test_every_check_runs_before_tracing_or_writing(tmp_path, monkeypatch):
    inputs_ = keras.Input((4,))
    outputs = ki.ExpandableDense(3, name="head")(CountingLayer()(inputs_))
    model = keras.Model(inputs_, outputs)
    base = tmp_path / "models"
    os.makedirs(base)
    (base / "1").write_text("a stray file")
    (tmp_path / "file.txt").write_text("not a folder")
    before = tree(tmp_path)

    def no_write(self, filepath, **kwargs):
        raise AssertionError("written despite a failed check")

    monkeypatch.setattr(
        type(keras.export.ExportArchive()), "write_out", no_write
    )
    CountingLayer.calls = 0
    for kwargs, error, match in [
        (dict(version=1), ValueError, "Version 1 exists already"),
        (dict(export_dir=tmp_path / "file.txt"), ValueError, "is a file"),
        (dict(metadata=["stage", 1]), TypeError, "`metadata`.*dict"),
        (dict(metadata={"x": object()}), TypeError, "JSON"),
        (dict(metadata={"x": float("nan")}), ValueError, "JSON"),
        (dict(metadata={1: "stage"}), ValueError, "read back"),
        (dict(metadata={"x": (1, 2)}), ValueError, "read back"),
        (dict(metadata={"x": "a" * 2**20}), ValueError, "bytes"),
        (dict(class_names="cat"), TypeError, "list of names"),
        (dict(class_names=["a", "a", "b"]), ValueError, "duplicates"),
        (dict(warmup_inputs=np.zeros((2, 5))), (ValueError, ImportError), None),
    ]:
        arguments = dict(model=model, export_dir=base, class_names=NAMES)
        arguments.update(kwargs)
        with pytest.raises(error, match=match):
            export_for_serving(**arguments)
        assert CountingLayer.calls == 0, kwargs
        assert tree(tmp_path) == before, kwargs


@pytest.mark.backend_independent
def test_metadata_is_written_with_the_version(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    stage = {"run": "a1b2", "stage": 2, "classes": ["cat", "dog", "bird"]}
    version_dir = export_for_serving(model, tmp_path, NAMES, metadata=stage)
    path = os.path.join(version_dir, "assets.extra", "keras_incremental.json")
    with open(path, encoding="utf-8") as file:
        assert json.load(file) == stage
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~current_umask())
    export_for_serving(model, tmp_path, NAMES)
    export_for_serving(model, tmp_path, NAMES, metadata={})
    assert exported_versions(tmp_path) == {1: stage, 2: None, 3: {}}
    # The version still serves.
    answer = serve(version_dir, inputs())
    assert answer["probabilities"].shape == (16, 3)


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.backend_independent
@pytest.mark.skipif(os.name == "nt", reason="FIFOs and /dev/zero")
def test_exported_versions_reads_untrusted_metadata(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    first = export_for_serving(model, tmp_path, NAMES, metadata={"ok": True})
    for version in range(2, 9):
        shutil.copytree(first, tmp_path / str(version))

    def metadata_path(version):
        return (
            tmp_path / str(version) / "assets.extra" / "keras_incremental.json"
        )

    metadata_path(2).write_text("{not json")
    metadata_path(3).write_bytes(b'{"x": "\xff"}')
    metadata_path(4).write_text('["a", "list"]')
    metadata_path(5).write_text('{"x": "' + "a" * 2**20 + '"}')
    metadata_path(6).unlink()
    os.mkfifo(metadata_path(6))  # Reading it would block.
    metadata_path(7).write_text("[" * 100_000 + "]" * 100_000)
    metadata_path(8).unlink()
    os.symlink("/dev/zero", metadata_path(8))
    os.makedirs(tmp_path / "9")  # Not a SavedModel.
    (tmp_path / "10").write_text("a file")
    os.makedirs(tmp_path / "11abc")
    shutil.copytree(first, tmp_path / "0012")
    (tmp_path / "12").write_text("a file")

    assert exported_versions(tmp_path) == {
        1: {"ok": True},
        2: None,
        3: None,
        4: None,
        5: None,
        6: None,
        7: None,
        8: None,
        12: {"ok": True},
    }


@pytest.mark.backend_independent
def test_exported_versions_of_a_missing_or_bad_folder(tmp_path):
    assert exported_versions(tmp_path / "missing") == {}
    (tmp_path / "file.txt").write_text("a file")
    with pytest.raises(ValueError, match="is a file; expected"):
        exported_versions(tmp_path / "file.txt")
    with pytest.raises(TypeError, match="folder path.*Received"):
        exported_versions(None)


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.backend_independent
@pytest.mark.skipif(os.name == "nt", reason="no leftovers removed there")
def test_export_removes_dead_exports_leftovers_only(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    dead = tmp_path / f".partial-{dead_pid()}-abcd1234"
    os.makedirs(dead / "variables")
    (dead / "saved_model.pb").write_text("half")
    live = tmp_path / f".partial-{os.getpid()}-efgh5678"
    os.makedirs(live)
    (tmp_path / ".partial-foo").write_text("not ours")
    written = []
    archive_class = type(keras.export.ExportArchive())
    write_out = archive_class.write_out

    def recording_write_out(self, filepath, **kwargs):
        written.append(os.path.basename(filepath))
        return write_out(self, filepath, **kwargs)

    monkeypatch.setattr(archive_class, "write_out", recording_write_out)
    export_for_serving(model, tmp_path, NAMES)

    assert sorted(os.listdir(tmp_path)) == sorted(
        ["1", live.name, ".partial-foo"]
    )
    assert written[0].startswith(f".partial-{os.getpid()}-")
