"""New units drawn as the layer's initializer would draw the grown value."""

import keras
import numpy as np
import pytest
from helpers import tensorflow_only

import keras_incremental as ki
from keras_incremental.layers.new_units import new_units_value

# Many units before growth: the fans of the grown kernel differ clearly from
# those of the new columns alone.
ROWS, UNITS, NEW = 200, 300, 100


@pytest.mark.parametrize(
    "initializer, bounded",
    [
        ("glorot_uniform", True),
        ("glorot_normal", True),
        ("he_normal", True),
        ("he_uniform", True),
        ("lecun_normal", True),
        (
            {
                "class_name": "VarianceScaling",
                "config": {
                    "scale": 2.0,
                    "mode": "fan_out",
                    "distribution": "untruncated_normal",
                },
            },
            False,
        ),
        (
            {
                "class_name": "RandomNormal",
                "config": {"mean": 1.0, "stddev": 0.5},
            },
            False,
        ),
        (
            {
                "class_name": "RandomUniform",
                "config": {"minval": -0.3, "maxval": 0.2},
            },
            True,
        ),
        (
            {
                "class_name": "TruncatedNormal",
                "config": {"mean": 0.5, "stddev": 0.1},
            },
            True,
        ),
    ],
)
def test_random_units_follow_the_distribution_of_the_grown_value(
    initializer, bounded
):
    keras.utils.set_random_seed(0)
    initializer = keras.initializers.get(initializer)
    shape = (ROWS, UNITS + NEW)
    drawn = new_units_value(initializer, shape, UNITS, "float32")
    assert drawn.shape == (ROWS, NEW)
    # The reference: Keras's own draw for the whole grown kernel.
    reference = keras.ops.convert_to_numpy(initializer(shape))
    scale = reference.std()
    assert drawn.std() == pytest.approx(scale, rel=0.03)
    quantiles = [1, 10, 50, 90, 99]
    np.testing.assert_allclose(
        np.percentile(drawn, quantiles),
        np.percentile(reference, quantiles),
        atol=0.08 * scale,
    )
    if bounded:  # uniform, or normal drawn again beyond 2 stddev
        assert drawn.min() >= reference.min() - 0.02 * scale
        assert drawn.max() <= reference.max() + 0.02 * scale


@pytest.mark.parametrize(
    "initializer, value",
    [
        ("zeros", 0.0),
        ("ones", 1.0),
        ({"class_name": "Constant", "config": {"value": 0.7}}, 0.7),
    ],
)
def test_constant_units(initializer, value):
    initializer = keras.initializers.get(initializer)
    drawn = new_units_value(initializer, (5,), 3, "float32")
    np.testing.assert_array_equal(drawn, np.full((2,), value))


def test_seeded_draws_repeat_per_width_and_differ_between_widths():
    initializer = keras.initializers.GlorotUniform(seed=7)
    first = new_units_value(initializer, (8, 5), 3, "float32")
    again = new_units_value(initializer, (8, 5), 3, "float32")
    later = new_units_value(initializer, (8, 7), 5, "float32")
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, later[:, :2])


def test_growth_is_reproducible_under_set_random_seed():
    def grown():
        keras.utils.set_random_seed(3)
        layer = ki.ExpandableDense(2)
        layer.build((None, 6))
        layer.expand(3)
        return layer.kernel.numpy()

    np.testing.assert_array_equal(grown(), grown())


class Doubled(keras.initializers.RandomNormal):
    def __call__(self, shape, dtype=None):
        return 2.0 * super().__call__(shape, dtype=dtype)


@pytest.mark.parametrize(
    "initializer",
    [
        keras.initializers.Orthogonal(seed=1),
        Doubled(seed=1),
        lambda shape, dtype=None: np.arange(np.prod(shape)).reshape(shape),
    ],
    ids=["orthogonal", "subclass", "callable"],
)
def test_other_initializers_draw_the_grown_value(initializer):
    drawn = new_units_value(initializer, (4, 6), 4, "float32")
    full = keras.ops.convert_to_numpy(initializer((4, 6), dtype="float32"))
    np.testing.assert_array_equal(drawn, full[:, 4:])


@tensorflow_only
def test_negative_seeds_as_keras_takes_them():
    initializer = keras.initializers.GlorotUniform(seed=-1)
    first = new_units_value(initializer, (8, 5), 3, "float32")
    np.testing.assert_array_equal(
        first, new_units_value(initializer, (8, 5), 3, "float32")
    )
    layer = ki.ExpandableDense(2, kernel_initializer=initializer)
    layer.build((None, 8))
    layer.expand(3)
    assert layer.kernel.shape == (8, 5)
