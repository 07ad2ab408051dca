"""Initial values for the units that a growing layer adds."""

import math

import numpy as np
from keras import initializers
from keras import ops

# `keras.random.truncated_normal` draws again beyond two standard deviations.
# This is the standard deviation of a unit normal cut there; `VarianceScaling`
# divides by it so that the cut draw keeps the variance it asks for.
_TRUNCATED_STDDEV = 0.87962566103423978


def new_units_value(initializer, grown_shape, units, dtype):
    """The entries past `units` along the last axis of an initial value.

    The values follow the distribution that `initializer` gives a variable of
    `grown_shape`: fan-based initializers (`glorot_uniform`, `he_normal`, ...)
    take the fans of the grown shape, so new units are like the rest.

    Growth runs eagerly, and a backend draw costs several eager operations;
    the Keras initializers whose distribution is known (`VarianceScaling` and
    its subclasses, `RandomNormal`, `RandomUniform`, `TruncatedNormal`,
    `Zeros`, `Ones`, `Constant`) are drawn in NumPy, and only the new entries.
    A seeded one is seeded by its seed and `units`, so a growth repeats when
    repeated and no growth repeats another's values. Other initializers
    (`Orthogonal`, callables) draw the whole grown value.

    Args:
        initializer: A Keras initializer (or a callable taking
            `(shape, dtype)`).
        grown_shape: The shape of the variable after growth.
        units: The size of the last axis before growth.
        dtype: The dtype of the variable.

    Returns:
        A NumPy array of shape `grown_shape[:-1] + (grown_shape[-1] - units,)`.
    """
    grown_shape = tuple(grown_shape)
    shape = grown_shape[:-1] + (grown_shape[-1] - units,)
    value = _numpy_draw(initializer, grown_shape, shape, units)
    if value is not None:
        return value
    full = ops.convert_to_numpy(initializer(grown_shape, dtype=dtype))
    return full[..., units:]


def _numpy_draw(initializer, grown_shape, shape, units):
    """A NumPy draw of `shape` from `initializer`'s distribution, or `None`."""
    if _draws_as(initializer, initializers.Zeros):
        return np.zeros(shape)
    if _draws_as(initializer, initializers.Ones):
        return np.ones(shape)
    if _draws_as(initializer, initializers.Constant):
        return np.full(shape, initializer.value)
    seed = getattr(initializer, "seed", None)
    if not isinstance(seed, int):
        # A `SeedGenerator` keeps its state in a backend variable.
        return None
    # Keras gives unseeded initializers a seed of their own at creation, and
    # takes negative seeds as their 32-bit pattern; NumPy takes neither sign.
    generator = np.random.default_rng((seed % 2**32, units))
    if _draws_as(initializer, initializers.RandomNormal):
        return generator.normal(initializer.mean, initializer.stddev, shape)
    if _draws_as(initializer, initializers.TruncatedNormal):
        return initializer.mean + _truncated_normal(
            generator, initializer.stddev, shape
        )
    if _draws_as(initializer, initializers.RandomUniform):
        return generator.uniform(initializer.minval, initializer.maxval, shape)
    if _draws_as(initializer, initializers.VarianceScaling):
        return _variance_scaling(initializer, generator, grown_shape, shape)
    return None


def _draws_as(initializer, base):
    """Whether `initializer` is a `base` that draws as `base` does."""
    return (
        isinstance(initializer, base)
        and type(initializer).__call__ is base.__call__
    )


def _variance_scaling(initializer, generator, grown_shape, shape):
    if (
        getattr(initializer, "input_axes", None) is not None
        or getattr(initializer, "output_axes", None) is not None
        or len(grown_shape) not in (1, 2)
    ):
        return None
    fan_in, fan_out = grown_shape[0], grown_shape[-1]
    fan = {
        "fan_in": fan_in,
        "fan_out": fan_out,
        "fan_avg": (fan_in + fan_out) / 2.0,
    }[initializer.mode]
    scale = initializer.scale / max(1.0, fan)
    if initializer.distribution == "truncated_normal":
        stddev = math.sqrt(scale) / _TRUNCATED_STDDEV
        return _truncated_normal(generator, stddev, shape)
    if initializer.distribution == "untruncated_normal":
        return generator.normal(0.0, math.sqrt(scale), shape)
    limit = math.sqrt(3.0 * scale)
    return generator.uniform(-limit, limit, shape)


def _truncated_normal(generator, stddev, shape):
    """A normal draw with values beyond two `stddev` drawn again."""
    value = generator.normal(0.0, 1.0, shape)
    outside = np.abs(value) > 2.0
    while outside.any():
        value[outside] = generator.normal(0.0, 1.0, int(outside.sum()))
        outside = np.abs(value) > 2.0
    return value * stddev
