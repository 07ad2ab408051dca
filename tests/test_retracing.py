"""Growth in place: the same variables, and stage functions kept."""

import keras
import numpy as np
import pytest
from helpers import compiled_mlp
from helpers import data
from helpers import tensorflow_only
from sklearn.datasets import load_digits

import keras_incremental as ki
from keras_incremental import strategies

# Growth in place and reused traced functions are TensorFlow's; JAX and
# PyTorch replace the head's variables and remake their functions.
pytestmark = tensorflow_only

PLAN = [[0, 1], [2, 3], [4, 5], [6, 7]]


@pytest.fixture(scope="module")
def digits():
    loaded = load_digits()
    x = (loaded.data / 16.0).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:1200]], loaded.target[order[:1200]]


def make_model(metrics=("accuracy",), loss=None):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="body"),
            ki.ExpandableDense(0, name="head"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=loss
        or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics),
    )
    return model


class Retraced(strategies.Combine):
    """The default strategy, traced anew every stage."""

    def trace_signature(self, context):
        return (context.stage,)


class TrainFunctions(keras.callbacks.Callback):
    """The train function each stage's first step ran (after that step: a
    stale function is remade on its first call)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_begin(self, logs=None):
        self._first = True

    def on_train_batch_end(self, batch, logs=None):
        if self._first:
            self.seen.append(self.model.train_function)
            self._first = False


def run(digits, strategy, model=None, plan=PLAN):
    keras.utils.set_random_seed(0)
    x, y = digits
    model = model or make_model()
    inc = ki.IncrementalModel(model=model, strategy=strategy, memory_size=40)
    functions = TrainFunctions()
    for classes in plan:
        mask = np.isin(y, classes)
        xs, ys = inc.prepare(x[mask], y[mask])
        model.fit(
            xs,
            ys,
            epochs=2,
            batch_size=32,
            verbose=0,
            callbacks=[inc, functions],
        )
    return model, functions.seen


def test_expand_grows_the_same_variables_in_place():
    model = compiled_mlp(3)
    x, y = data(classes=3)
    model.fit(x, y, epochs=1, verbose=0)
    head = model.get_layer("head")
    kernel, bias = head.kernel, head.bias
    slots = list(model.optimizer.variables)
    before = kernel.numpy()

    ki.expand(model, 2)

    assert head.kernel is kernel and head.bias is bias
    pairs = zip(model.optimizer.variables, slots, strict=True)
    assert all(a is b for a, b in pairs)
    assert tuple(kernel.shape) == (16, 5)
    np.testing.assert_array_equal(kernel.numpy()[:, :3], before)
    x, y = data(classes=5, seed=1)
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(kernel.numpy()[:, 3:], np.zeros((16, 2)))


def test_later_stages_reuse_the_train_function(digits):
    model, seen = run(digits, "default")
    # The head grows in place, the teacher too (it has no class at stage
    # 0): one trace serves every stage.
    assert all(function is seen[0] for function in seen)
    assert model.get_layer("head").units == 8


def test_reused_functions_train_as_fresh_ones_would(digits):
    reused, _ = run(digits, "default")
    parts = strategies.get("default").parts
    fresh, seen = run(digits, Retraced(*parts, name="default"))
    assert len({id(f) for f in seen}) == len(PLAN)
    for a, b in zip(reused.weights, fresh.weights, strict=True):
        np.testing.assert_allclose(
            a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path
        )


def test_free_width_stages_with_a_self_sizing_metric(digits):
    model = make_model(
        metrics=[keras.metrics.F1Score(average="macro")],
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    model, _ = run(digits, "default", model=model, plan=PLAN[:3])
    x, y = digits
    mask = np.isin(y, [0, 1, 2, 3, 4, 5])
    onehot = np.eye(6, dtype="float32")[y[mask]]
    logs = model.evaluate(x[mask], onehot, verbose=0, return_dict=True)
    predicted = model.predict(x[mask], verbose=0).argmax(-1)
    metric = keras.metrics.F1Score(average="macro")
    metric.update_state(onehot, np.eye(6, dtype="float32")[predicted])
    assert logs["f1_score"] == pytest.approx(float(metric.result()), abs=1e-6)
