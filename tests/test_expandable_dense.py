import keras
import numpy as np
import pytest
from helpers import data
from helpers import mlp

import keras_incremental as ki


@pytest.mark.parametrize("shape", [(5, 8), (5, 4, 8), (2, 3, 4, 8)])
def test_same_outputs_as_dense_for_same_weights(shape):
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    kwargs = dict(activation="relu", kernel_initializer="he_normal")
    dense = keras.layers.Dense(6, **kwargs)
    expandable = ki.ExpandableDense(6, **kwargs)
    dense.build(shape)
    expandable.build(shape)
    bias = np.linspace(-1, 1, 6).astype("float32")
    expandable.set_weights([dense.get_weights()[0], bias])
    dense.set_weights([dense.get_weights()[0], bias])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(expandable(x)),
        keras.ops.convert_to_numpy(dense(x)),
    )
    assert expandable.compute_output_shape(shape) == shape[:-1] + (6,)


def test_is_a_dense_layer_with_its_arguments():
    layer = ki.ExpandableDense(
        4, activation="softmax", use_bias=False, name="h", dtype="float64"
    )
    assert isinstance(layer, keras.layers.Dense)
    layer.build((None, 3))
    assert layer.bias is None
    assert layer.kernel.dtype == "float64"
    assert layer.activation is keras.activations.softmax


def test_zero_units_give_empty_outputs_without_matmul():
    model = mlp(units=0)
    x, _ = data()
    out = model.predict(x, verbose=0)
    assert out.shape == (64, 0)
    assert model.get_layer("head").kernel.shape == (16, 0)
    x3 = np.zeros((2, 5, 8), "float32")
    layer = ki.ExpandableDense(0)
    assert tuple(layer(x3).shape) == (2, 5, 0)


def test_expand_keeps_old_columns_and_initializes_new_ones():
    layer = ki.ExpandableDense(3, bias_initializer="ones")
    layer.build((None, 4))
    kernel, bias = layer.get_weights()
    pairs = layer.expand(2, kernel_initializer="zeros")
    assert len(pairs) == 2
    assert layer.units == 5
    new_kernel, new_bias = layer.get_weights()
    np.testing.assert_array_equal(new_kernel[:, :3], kernel)
    np.testing.assert_array_equal(new_kernel[:, 3:], np.zeros((4, 2)))
    np.testing.assert_array_equal(new_bias, np.ones(5))
    assert [v.path for v in layer.weights] == [v.path for v, _ in pairs]


def test_expand_unbuilt_layer_only_changes_units():
    layer = ki.ExpandableDense(0)
    assert layer.expand(3) == []
    assert layer.units == 3
    layer.build((None, 2))
    assert layer.kernel.shape == (2, 3)


def test_expand_zero_is_a_no_op():
    layer = ki.ExpandableDense(2)
    layer.build((None, 4))
    kernel = layer.kernel
    assert layer.expand(0) == []
    assert layer.kernel is kernel


def test_config_reports_current_units_and_round_trips():
    layer = ki.ExpandableDense(2, activation="relu", name="head")
    layer.build((None, 4))
    layer.expand(3)
    config = layer.get_config()
    assert config["units"] == 5
    clone = ki.ExpandableDense.from_config(config)
    assert clone.units == 5 and clone.name == "head"
    assert ki.ExpandableDense.from_config({**config, "units": 0}).units == 0


def test_registered_for_saving(tmp_path):
    model = mlp(units=0)
    model.get_layer("head").expand(3)
    x, _ = data()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("head"), ki.ExpandableDense)
    assert loaded.get_layer("head").units == 3
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    name = keras.saving.get_registered_name(ki.ExpandableDense)
    assert name == "keras_incremental>ExpandableDense"


@pytest.mark.parametrize(
    "units, error",
    [
        (-3, ValueError),
        (2.5, TypeError),
        ("4", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_invalid_units(units, error):
    with pytest.raises(error, match=r"`units`.*Received: units="):
        ki.ExpandableDense(units)


def test_numpy_integer_units_accepted():
    assert ki.ExpandableDense(np.int64(3)).units == 3
