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


@pytest.mark.parametrize("capacity", [None, 8])
def test_a_layer_without_bias_grows(capacity):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            ki.ExpandableDense(
                0, use_bias=False, capacity=capacity, name="head"
            ),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    ki.expand(model, 2)
    ki.expand(model, 3)
    head = model.get_layer("head")
    assert head.units == 5 and head.bias is None
    assert tuple(model(np.ones((2, 4), "float32")).shape) == (2, 5)


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


def _inferred_width(layer, features):
    """The width of `layer`'s outputs in Keras's shape inference (where
    `fit` builds the compiled loss and metrics on JAX and PyTorch)."""
    from keras.src.backend import compute_output_spec

    return compute_output_spec(layer, keras.KerasTensor((3, features))).shape


def test_announce_units_widens_shape_inference_only():
    layer = ki.ExpandableDense(2)
    layer.build((None, 4))
    assert _inferred_width(layer, 4) == (3, 2)
    layer.announce_units(np.int64(5))
    assert _inferred_width(layer, 4) == (3, 5)
    assert layer.units == 2
    assert layer.compute_output_shape((None, 4)) == (None, 2)
    assert layer.kernel.shape == (4, 2)
    layer.announce_units(2)
    assert _inferred_width(layer, 4) == (3, 2)


@pytest.mark.parametrize(
    "n, error, message",
    [
        (1, ValueError, "expected an integer >= 2. Received: n=1"),
        (-1, ValueError, "expected an integer >= 2. Received: n=-1"),
        (3.0, TypeError, "Received: n=3.0 of type float"),
        ("4", TypeError, "Received: n='4' of type str"),
        (True, TypeError, "Received: n=True of type bool"),
        (None, TypeError, "Received: n=None of type NoneType"),
    ],
)
def test_announce_units_refuses_bad_values(n, error, message):
    layer = ki.ExpandableDense(2)
    layer.build((None, 4))
    layer.announce_units(4)
    with pytest.raises(error) as raised:
        layer.announce_units(n)
    assert "Received an invalid value for `n`" in str(raised.value)
    assert message in str(raised.value)
    assert _inferred_width(layer, 4) == (3, 4)
    assert layer.units == 2


@pytest.mark.parametrize("name", ["free_width", "masked_in_inference"])
def test_stage_flags_are_checked_bools(name):
    layer = ki.ExpandableDense(2)
    assert getattr(layer, name) is False
    setattr(layer, name, True)
    assert getattr(layer, name) is True
    for value in (1, 0, "yes", None, np.bool_(False)):
        with pytest.raises(
            TypeError,
            match=rf"Received an invalid value for `{name}`, expected a bool "
            rf"\(True or False\). Received: {name}=",
        ):
            setattr(layer, name, value)
        assert getattr(layer, name) is True
    setattr(layer, name, False)
    assert getattr(layer, name) is False


def test_free_width_is_what_masked_outputs_follow():
    x, _ = data(4, features=5)
    head = ki.ExpandableDense(2, capacity=4)
    head.build((None, 5))
    head.free_width = True
    assert tuple(head(x, training=True).shape) == (4, 4)
    assert tuple(head(x, training=False).shape) == (4, 2)
    head.masked_in_inference = True
    assert tuple(head(x, training=False).shape) == (4, 4)
    head.free_width = False
    assert tuple(head(x, training=True).shape) == (4, 2)


def test_allocate_and_release_on_a_built_layer():
    layer = ki.ExpandableDense(2)
    layer.build((None, 4))
    kernel = layer.kernel
    token = layer.allocate(6)
    assert layer.capacity == 6
    assert [v.name for v in layer.weights] == ["kernel", "bias", "active_units"]
    assert int(keras.ops.convert_to_numpy(layer.weights[2])) == 2
    # The variables keep their shapes until a growth reallocates them.
    assert layer.kernel is kernel and kernel.shape == (4, 2)
    # A capacity the layer has changes nothing; its token puts back nothing.
    again = layer.allocate(3)
    assert layer.capacity == 6
    layer.release_allocation(again)
    assert layer.capacity == 6 and len(layer.weights) == 3
    layer.release_allocation(token)
    assert layer.capacity is None
    assert [v.name for v in layer.weights] == ["kernel", "bias"]
    assert layer.kernel is kernel


def test_allocate_keeps_a_larger_capacity_than_asked_for_units():
    layer = ki.ExpandableDense(5, capacity=8)
    layer.build((None, 4))
    token = layer.allocate(16)
    assert layer.capacity == 16 and len(layer.weights) == 3
    layer.release_allocation(token)
    assert layer.capacity == 8 and len(layer.weights) == 3


@pytest.mark.parametrize(
    "capacity, error, message",
    [
        (0, ValueError, "Received an invalid value for `capacity`"),
        (2.5, TypeError, "Received an invalid value for `capacity`"),
        ("4", TypeError, "Received an invalid value for `capacity`"),
    ],
)
def test_allocate_refuses_bad_capacities(capacity, error, message):
    layer = ki.ExpandableDense(2)
    layer.build((None, 4))
    with pytest.raises(error, match=message):
        layer.allocate(capacity)
    assert layer.capacity is None and len(layer.weights) == 2


def test_allocate_refuses_an_unbuilt_layer():
    layer = ki.ExpandableDense(2)
    with pytest.raises(
        ValueError, match=r"is not built.*`reserve\(capacity\)`"
    ):
        layer.allocate(4)
    assert layer.capacity is None and not layer.built


def test_release_allocation_refuses_foreign_tokens():
    layer = ki.ExpandableDense(2, name="head")
    layer.build((None, 4))
    other = ki.ExpandableDense(2, name="other")
    other.build((None, 4))
    token = layer.allocate(4)
    for bad in (None, (None, None), "token"):
        with pytest.raises(
            TypeError, match="Received an invalid value for `token`"
        ):
            layer.release_allocation(bad)
    with pytest.raises(ValueError, match="on layer 'other'.*layer 'head'"):
        other.release_allocation(token)
    assert layer.capacity == 4 and len(layer.weights) == 3
    assert other.capacity is None and len(other.weights) == 2
    layer.release_allocation(token)
    assert layer.capacity is None


def test_set_active_units_writes_the_masked_count():
    x, _ = data(4, features=5)
    head = ki.ExpandableDense(3, capacity=4, activation="softmax")
    head.build((None, 5))
    head.free_width = True
    head.set_active_units(2)
    assert int(keras.ops.convert_to_numpy(head.weights[2])) == 2
    outputs = keras.ops.convert_to_numpy(head(x, training=True))
    np.testing.assert_array_equal(outputs[:, 2:], 0.0)
    head.set_active_units(3)
    assert int(keras.ops.convert_to_numpy(head.weights[2])) == 3
    # Without spare capacity there is no count: nothing changes.
    plain = ki.ExpandableDense(3)
    plain.build((None, 5))
    plain.set_active_units(3)
    assert len(plain.weights) == 2


@pytest.mark.parametrize(
    "n, error, message",
    [
        (-1, ValueError, r"expected an integer >= 0. Received: n=-1"),
        (4, ValueError, r"from 0 to the layer's 3 units. Received: n=4"),
        (1.5, TypeError, r"Received: n=1.5 of type float"),
        (None, TypeError, r"Received: n=None of type NoneType"),
    ],
)
def test_set_active_units_refuses_bad_counts(n, error, message):
    spare = ki.ExpandableDense(3, capacity=8)
    plain = ki.ExpandableDense(3)
    for layer in (spare, plain):
        layer.build((None, 5))
        with pytest.raises(error, match=message):
            layer.set_active_units(n)
        assert layer.units == 3
    assert int(keras.ops.convert_to_numpy(spare.weights[2])) == 3
    assert len(plain.weights) == 2
