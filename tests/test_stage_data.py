"""The data path: labels read one way, encode, class_weight, remember,
stage rules (prepare twice, fit without prepare, dtypes), callback order."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import values
from sklearn.datasets import load_digits

import keras_incremental as ki
from keras_incremental.data.stage_data import normalize_labels

NAMES = np.array("zero one two three four five six seven eight nine".split())


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    return x[:1200], y[:1200], x[1200:], y[1200:]


def make_model(loss="sparse", units=0, hidden=32):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation="relu", name="body"),
            ki.ExpandableDense(units, name="head"),
        ]
    )
    loss_object = (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if loss == "sparse"
        else keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    model.compile(optimizer="adam", loss=loss_object, metrics=["accuracy"])
    return model


def stage(x, y, classes):
    mask = np.isin(y, classes)
    return x[mask], y[mask]


def test_normalize_labels_reads_columns_as_labels_not_one_hot():
    np.testing.assert_array_equal(
        normalize_labels(np.array([[1], [1], [1]])), [1, 1, 1]
    )
    np.testing.assert_array_equal(
        normalize_labels(np.array([[7], [3]])), [7, 3]
    )
    np.testing.assert_array_equal(
        normalize_labels([[0, 0, 1], [1, 0, 0]]), [2, 0]
    )
    assert normalize_labels(["a", "b"]).tolist() == ["a", "b"]
    assert normalize_labels([1, "1"]).tolist() == [1, "1"]
    with pytest.raises(ValueError, match=r"shape \(2, 1, 1\)"):
        normalize_labels(np.zeros((2, 1, 1)))


def test_column_labels_are_classes_in_prepare(digits):
    x, y, _, _ = digits
    xs, ys = stage(x, y, [1])
    inc = ki.IncrementalModel()
    _, targets = inc.prepare(xs, ys.reshape(-1, 1))
    # A column of all 1s is the class 1, not the one-hot class 0.
    assert inc.classes_ == [1]
    np.testing.assert_array_equal(targets, np.zeros(len(ys)))


def test_encode_gives_what_the_loss_expects(digits):
    x, y, _, _ = digits
    sparse = ki.IncrementalModel(model=make_model())
    with pytest.raises(ValueError, match="No class is known yet"):
        sparse.encode([3])
    sparse.prepare(*stage(x, y, [3, 4]))
    np.testing.assert_array_equal(sparse.encode([4, 3, 4]), [1, 0, 1])
    np.testing.assert_array_equal(sparse.encode(np.array([[4], [3]])), [1, 0])
    with pytest.raises(ValueError, match=r"not known classes: \[7\]"):
        sparse.encode([3, 7])
    categorical = ki.IncrementalModel(model=make_model("categorical"))
    categorical.prepare(*stage(x, y, [5, 6, 7]))
    np.testing.assert_array_equal(
        categorical.encode(["x"] and [7, 5]),
        [[0, 0, 1], [1, 0, 0]],
    )
    with pytest.raises(TypeError):
        categorical.encode(["seven"])


def test_validation_data_with_encode_scores_like_evaluate(digits):
    x, y, x_test, y_test = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, strategy="replay", memory_size=100)
    # Classes arrive out of order: raw labels are not their indices.
    for classes in ([2, 3, 4, 5, 6, 7, 8, 9], [0, 1]):
        xs, ys = inc.prepare(*stage(x, y, classes))
        x_val, y_val = stage(x_test, y_test, classes)
        history = model.fit(
            xs,
            ys,
            epochs=3,
            batch_size=32,
            verbose=0,
            validation_data=(x_val, inc.encode(y_val)),
            callbacks=[inc],
        )
    truth = np.asarray(inc.decode(inc.predict(x_val))) == y_val
    assert history.history["val_accuracy"][-1] == pytest.approx(
        truth.mean(), abs=1e-6
    )
    assert truth.mean() > 0.8


def test_class_weight_maps_names_to_indices(digits):
    x, y, _, _ = digits
    inc = ki.IncrementalModel()
    xs, ys = stage(x, y, [8, 9])
    inc.prepare(xs, NAMES[ys])
    assert inc.class_weight({"nine": 0.5, "eight": 2}) == {1: 0.5, 0: 2.0}
    assert inc.class_weight({np.str_("nine"): 1.0}) == {1: 1.0}
    with pytest.raises(ValueError, match=r"does not know: \['seven'\]"):
        inc.class_weight({"eight": 2.0, "seven": 1.0})
    with pytest.raises(TypeError, match="dict"):
        inc.class_weight([("eight", 2.0)])
    with pytest.raises(ValueError, match=">= 0"):
        inc.class_weight({"eight": -1.0})
    with pytest.raises(TypeError, match="number"):
        inc.class_weight({"eight": "2"})


def test_class_weight_changes_training(digits):
    x, y, _, _ = digits
    xs, ys = stage(x, y, [8, 9])
    losses = []
    for weights in ({"eight": 1.0, "nine": 1.0}, {"eight": 4.0, "nine": 1.0}):
        keras.utils.set_random_seed(0)
        model = make_model()
        inc = ki.IncrementalModel(model=model)
        x_fit, y_fit = inc.prepare(xs, NAMES[ys])
        history = model.fit(
            x_fit,
            y_fit,
            epochs=1,
            shuffle=False,
            verbose=0,
            class_weight=inc.class_weight(weights),
            callbacks=[inc],
        )
        losses.append(history.history["loss"][-1])
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)


def test_remember_fills_a_balanced_memory_within_budget(digits):
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, memory_size=30)
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1, 2])),
        epochs=1,
        verbose=0,
        callbacks=[inc],
    )
    inc.memory = ki.memory.ExemplarMemory(30)
    assert inc.remember(*stage(x, y, [0, 1, 2])) == 30
    stored_x, stored_y = inc.memory.samples()
    assert np.bincount(stored_y).tolist() == [10, 10, 10]
    # The stored samples are real samples of their class.
    for sample, label in zip(stored_x, stored_y, strict=True):
        matches = np.flatnonzero(np.all(x == sample, axis=1))
        assert y[matches[0]] == [0, 1, 2][label]


def test_remember_refuses_unknown_classes_and_changes_nothing(digits):
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, memory_size=30)
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    before = [a.copy() for a in inc.memory.samples()]
    with pytest.raises(ValueError, match=r"unknown classes: \[5\]"):
        inc.remember(*stage(x, y, [0, 5]))
    with pytest.raises(ValueError, match="as many labels"):
        inc.remember(x[:3], [0, 1])
    with pytest.raises(ValueError, match="shaped like the exemplars"):
        inc.remember(np.zeros((2, 8)), [0, 1])
    for a, b in zip(before, inc.memory.samples(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert inc.classes_ == [0, 1]
    no_memory = ki.IncrementalModel(model=make_model())
    no_memory.prepare(*stage(x, y, [0]))
    with pytest.raises(ValueError, match="memory_size"):
        no_memory.remember(*stage(x, y, [0]))


def test_remember_with_herding_uses_the_model(digits):
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, strategy="icarl", memory_size=20)
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    inc.memory = ki.memory.ExemplarMemory(20, selection="herding")
    inc.remember(*stage(x, y, [0, 1]))
    assert np.bincount(inc.memory.samples()[1]).tolist() == [10, 10]


def test_fit_without_prepare_is_refused(digits):
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, memory_size=20)
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    weights = values(model.weights)
    # Raw labels of new classes, without `prepare`: they would be read as
    # indices of old classes.
    with pytest.raises(ValueError, match="without `inc.prepare"):
        model.fit(*stage(x, y, [2, 3]), epochs=1, verbose=0, callbacks=[inc])
    assert inc.classes_ == [0, 1]
    assert inc.stage_ == 1
    assert model.get_layer("head").units == 2
    for a, b in zip(weights, values(model.weights), strict=True):
        np.testing.assert_array_equal(a, b)


def test_second_prepare_before_fit_replaces_the_first(digits):
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, memory_size=20)
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    inc.prepare(*stage(x, y, [2, 3]))
    assert inc.classes_ == [0, 1, 2, 3]
    xs, ys = inc.prepare(*stage(x, y, [4]))
    # Classes 2 and 3 came with a stage that was never trained.
    assert inc.classes_ == [0, 1, 4]
    model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    assert model.get_layer("head").units == 3
    assert inc.stage_classes_ == [[0, 1], [2]]
    # A failed bad prepare leaves the pending stage as it was.
    inc.prepare(*stage(x, y, [5]))
    with pytest.raises(ValueError):
        inc.prepare(np.zeros((2, 64)), [None, 1])
    assert inc.classes_ == [0, 1, 4, 5]


def test_stage_dtypes_against_the_memory(digits):
    x, y, _, _ = digits
    model = make_model()
    inc = ki.IncrementalModel(model=model, strategy="replay", memory_size=20)
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    # Another floating dtype: cast to the memory's when they meet.
    xs, ys = stage(x, y, [2])
    x_fit, _ = inc.prepare(xs.astype("float64"), ys)
    assert x_fit.dtype == np.float64
    model.fit(x_fit, _, epochs=1, verbose=0, callbacks=[inc])
    assert inc.memory.samples()[0].dtype == np.float32
    # Another kind: refused, nothing changed.
    with pytest.raises(ValueError, match="kind of dtype"):
        inc.prepare((xs * 16).astype("int64"), ys + 1)
    assert inc.classes_ == [0, 1, 2]


def _scored_run(digits, labels):
    x, y, x_test, y_test = digits
    keras.utils.set_random_seed(0)
    model = make_model()
    inc = ki.IncrementalModel(
        model=model,
        strategy="replay",
        memory_size=40,
        evaluation=(x_test, labels[y_test]),
    )
    for classes in ([0, 1], [2, 3]):
        xs, ys = stage(x, y, classes)
        model.fit(
            *inc.prepare(xs, labels[ys]), epochs=3, verbose=0, callbacks=[inc]
        )
    return inc


def test_bytes_class_names_score_like_strings(digits):
    as_bytes = _scored_run(digits, np.array([n.encode() for n in NAMES]))
    as_text = _scored_run(digits, NAMES)
    # New classes of a stage are indexed in sorted order.
    assert as_bytes.classes_ == [b"one", b"zero", b"three", b"two"]
    scored = as_bytes.metrics()
    assert np.isfinite(scored["final_accuracy"])
    assert scored["final_accuracy"] > 0.3
    assert scored == as_text.metrics()


@pytest.mark.parametrize("where", ["before", "after"])
def test_callback_order_with_early_stopping(digits, tmp_path, where):
    x, y, x_test, y_test = digits
    model = make_model()
    inc = ki.IncrementalModel(
        model=model,
        strategy="replay",
        memory_size=40,
        checkpoint=tmp_path / "run.keras",
        export_dir=tmp_path / "serving",
    )
    model.fit(
        *inc.prepare(*stage(x, y, [0, 1])), epochs=1, verbose=0, callbacks=[inc]
    )
    x_val, y_val = stage(x_test, y_test, [0, 1, 2, 3])
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=30, restore_best_weights=True
    )
    callbacks = [early, inc] if where == "before" else [inc, early]
    xs, ys = inc.prepare(*stage(x, y, [2, 3]))
    # A high learning rate: the last epoch is not the best one.
    model.optimizer.learning_rate.assign(0.05)
    model.fit(
        xs,
        ys,
        epochs=6,
        verbose=0,
        validation_data=(x_val, inc.encode(y_val)),
        callbacks=callbacks,
    )
    assert early.best_weights is not None
    live = model.predict(x_test, verbose=0)
    for got, best in zip(model.get_weights(), early.best_weights, strict=True):
        np.testing.assert_array_equal(got, best)
    restored, _ = ki.IncrementalModel.restore(tmp_path / "run.keras")
    np.testing.assert_allclose(
        restored.predict(x_test, verbose=0), live, atol=1e-6
    )
    versions = sorted(os.listdir(tmp_path / "serving"))
    exported = tf.saved_model.load(str(tmp_path / "serving" / versions[-1]))
    answer = exported.signatures["serving_default"](inputs=tf.constant(x_test))
    np.testing.assert_allclose(
        answer["probabilities"].numpy(),
        keras.ops.convert_to_numpy(keras.ops.softmax(live)),
        atol=1e-5,
    )
