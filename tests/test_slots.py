"""Tests for `keras_incremental.optimizers.slots`: the optimizer tree and
the one copy of per-variable slots between optimizers."""

import keras
import numpy as np

import keras_incremental as ki
from keras_incremental import compat
from keras_incremental.optimizers import MultiplierOptimizer
from keras_incremental.optimizers.learning_rates import group_pattern
from keras_incremental.optimizers.slots import copy_slots
from keras_incremental.optimizers.slots import leaf_optimizers
from keras_incremental.optimizers.slots import optimizer_tree


def mlp(units=3):
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation="tanh", name="body"),
            ki.ExpandableDense(units, name="head"),
        ]
    )


def trained(model, optimizer):
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8)).astype("float32")
    y = rng.normal(size=(16, model.output_shape[-1])).astype("float32")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return model


def slots_of(optimizer, variable):
    """`{kind: value}` of `optimizer`'s slots for `variable`."""
    index = compat.optimizer_variable_index(optimizer, variable)
    return {
        kind: keras.ops.convert_to_numpy(slots[index])
        for kind, slots in compat.optimizer_slot_lists(optimizer)
        if slots[index] is not None
    }


def fresh(optimizer, variables):
    new = type(optimizer).from_config(optimizer.get_config())
    new.build(variables)
    return new


def test_copy_slots_copies_every_slot_of_the_same_variable():
    model = trained(mlp(), keras.optimizers.Adam(0.01, amsgrad=True))
    old = model.optimizer
    new = fresh(old, model.trainable_variables)
    copy_slots(old, new, [(v, v) for v in model.trainable_variables])
    for variable in model.trainable_variables:
        expected = slots_of(old, variable)
        assert len(expected) == 3  # Both moments and the AMSGrad maximum.
        copied = slots_of(new, variable)
        assert copied.keys() == expected.keys()
        for kind, value in expected.items():
            assert np.any(value != 0)
            np.testing.assert_array_equal(copied[kind], value)
    # The step counter is the optimizer's own: not copied.
    assert int(keras.ops.convert_to_numpy(new.iterations)) == 0


def test_copy_slots_pairs_a_variable_with_its_copy_and_shares_no_buffer():
    source = trained(mlp(), keras.optimizers.Adam(0.01))
    copy = mlp()
    copy.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    copy.optimizer.build(copy.trainable_variables)
    pairs = list(
        zip(source.trainable_variables, copy.trainable_variables, strict=True)
    )
    copy_slots(source.optimizer, copy.optimizer, pairs)
    for old, new in pairs:
        for kind, value in slots_of(source.optimizer, old).items():
            np.testing.assert_array_equal(
                slots_of(copy.optimizer, new)[kind], value
            )
    # Training the copy leaves the source's slots as they were (on JAX a
    # shared buffer would be donated, and deleted, by the copy's step).
    before = {
        id(v): slots_of(source.optimizer, v) for v in source.trainable_variables
    }
    x = np.ones((4, 8), "float32")
    copy.fit(x, np.ones((4, 3), "float32"), epochs=1, verbose=0)
    for variable in source.trainable_variables:
        for kind, value in slots_of(source.optimizer, variable).items():
            np.testing.assert_array_equal(value, before[id(variable)][kind])


def test_copy_slots_skips_other_shapes_and_unknown_variables():
    small = trained(mlp(3), keras.optimizers.Adam(0.01))
    large = mlp(5)
    large.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    # Built without the head's bias: that variable is unknown to it.
    known = large.trainable_variables[:-1]
    large.optimizer.build(known)
    pairs = list(
        zip(small.trainable_variables, large.trainable_variables, strict=True)
    )
    copy_slots(small.optimizer, large.optimizer, pairs)
    body_kernel, body_bias, head_kernel = known
    for old, new in zip(
        small.trainable_variables[:2], [body_kernel, body_bias], strict=True
    ):
        for kind, value in slots_of(small.optimizer, old).items():
            np.testing.assert_array_equal(
                slots_of(large.optimizer, new)[kind], value
            )
    # The head's kernel differs in shape: its slots keep their zeros.
    for value in slots_of(large.optimizer, head_kernel).values():
        assert not np.any(value)


def test_optimizer_tree_and_leaves():
    adam = keras.optimizers.Adam()
    assert list(optimizer_tree(adam)) == [adam]
    assert leaf_optimizers(adam) == [adam]
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
    assert list(optimizer_tree(scaled)) == [scaled, scaled.inner_optimizer]
    assert leaf_optimizers(scaled) == [scaled.inner_optimizer]
    multi = MultiplierOptimizer(
        keras.optimizers.SGD(0.1), {group_pattern(["body"]): 0.5}
    )
    tree = list(optimizer_tree(multi))
    assert tree[0] is multi and tree[1:] == list(multi.optimizers)
    assert leaf_optimizers(multi) == list(multi.optimizers)
