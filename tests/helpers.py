"""Small models and data shared by the tests."""

import keras
import numpy as np
import pytest

import keras_incremental as ki

TENSORFLOW = keras.backend.backend() == "tensorflow"
# Tests of what only TensorFlow has: in-place growth of variables (other
# backends replace them), `tf.function` introspection, `tf.distribute`.
tensorflow_only = pytest.mark.skipif(
    not TENSORFLOW, reason="TensorFlow only: in-place growth, tf.function"
)


def assert_same_logits(actual, expected):
    """Logits of the old units after a growth: equal to the bit on
    TensorFlow; on JAX and PyTorch the wider matrix product may round the
    last bits differently (the weights themselves are equal to the bit)."""
    if TENSORFLOW:
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def data(n=64, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=n)
    return x, y


def mlp(units=3, features=8, hidden=16, name="head"):
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(hidden, activation="relu", name="body"),
            ki.ExpandableDense(units, name=name),
        ]
    )


def compiled_mlp(units=3, optimizer="adam", jit_compile=False, **kwargs):
    model = mlp(units, **kwargs)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def values(variables):
    return [np.array(v.numpy()) for v in variables]
