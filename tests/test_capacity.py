"""Spare capacity: a head allocated wider than its units, grown without
changing any variable's shape, so that a stage's compiled step serves the
next stages (JAX does not compile it again)."""

import io
import logging
import os
import zipfile

import h5py
import keras
import numpy as np
import pytest
from helpers import data

import keras_incremental as ki
from keras_incremental import compat
from keras_incremental.callbacks import stage_variables
from keras_incremental.callbacks.capacity import AUTO_CAPACITY
from keras_incremental.models.growth import find_head

JAX = keras.backend.backend() == "jax"


def model_with(head, features=8, hidden=16):
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(hidden, activation="relu", name="body"),
            head,
        ]
    )


def compiled(head, loss=None, **kwargs):
    model = model_with(head, **kwargs)
    model.compile(
        optimizer="adam",
        loss=loss
        or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def numpy(value):
    return keras.ops.convert_to_numpy(value)


def test_outputs_and_config_are_those_of_the_units():
    keras.utils.set_random_seed(0)
    x, _ = data(8, features=5)
    head = ki.ExpandableDense(2, capacity=4, activation="softmax")
    model = keras.Sequential([keras.Input((5,)), head])
    kernel, bias, active = head.weights
    assert tuple(kernel.shape) == (5, 4) and tuple(bias.shape) == (4,)
    assert int(numpy(active)) == 2
    # Spare columns are zeros.
    np.testing.assert_array_equal(numpy(kernel)[:, 2:], 0.0)
    dense = keras.layers.Dense(2, activation="softmax")
    dense.build((None, 5))
    dense.set_weights([numpy(kernel)[:, :2], numpy(bias)[:2]])
    outputs = numpy(model(x))
    assert outputs.shape == (8, 2)
    np.testing.assert_allclose(outputs, numpy(dense(x)), rtol=1e-6)
    config = head.get_config()
    assert config["units"] == 2 and config["capacity"] == 4
    assert "capacity" not in ki.ExpandableDense(2).get_config()


def test_free_width_training_outputs_mask_the_spare_columns():
    x, _ = data(4, features=5)
    head = ki.ExpandableDense(2, capacity=4, activation="softmax")
    model = keras.Sequential([keras.Input((5,)), head])
    head.free_width = True
    trained = numpy(model(x, training=True))
    assert trained.shape == (4, 4)
    # A softmax gives the spare columns exactly nothing.
    np.testing.assert_array_equal(trained[:, 2:], 0.0)
    np.testing.assert_allclose(trained[:, :2], numpy(model(x)), rtol=1e-6)
    # Inference (predict in a callback) still gives the units.
    assert numpy(model(x, training=False)).shape == (4, 2)
    head.masked_in_inference = True
    assert numpy(model(x, training=False)).shape == (4, 4)


def test_expand_within_and_beyond_the_capacity():
    x, _ = data(8, features=5)
    head = ki.ExpandableDense(2, capacity=4)
    model = keras.Sequential([keras.Input((5,)), head])
    before = numpy(model(x))
    kernel, bias = head.kernel, head.bias
    pairs = head.expand(1)
    assert [(a is b) for a, b in pairs] == [True, True]
    assert head.kernel is kernel and head.bias is bias
    assert head.capacity == 4 and head.units == 3
    assert int(numpy(head.weights[2])) == 3
    np.testing.assert_array_equal(numpy(model(x))[:, :2], before)
    np.testing.assert_array_equal(numpy(head.kernel)[:, 3:], 0.0)
    head.expand(3)  # 6 units: the allocation doubles.
    assert head.capacity == 8 and tuple(head.kernel.shape) == (5, 8)
    assert numpy(model(x)).shape == (8, 6)
    np.testing.assert_array_equal(numpy(head.kernel)[:, 6:], 0.0)
    np.testing.assert_allclose(numpy(model(x))[:, :2], before, rtol=1e-5)


def test_saved_file_holds_the_units_only(tmp_path):
    x, _ = data(8, features=5)
    head = ki.ExpandableDense(3, capacity=8, name="head")
    model = keras.Sequential([keras.Input((5,)), head])
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")))
        group = weights["layers/expandable_dense/vars"]
        shapes = sorted(tuple(group[name].shape) for name in group)
    assert shapes == [(3,), (5, 3)]
    loaded = keras.models.load_model(path)
    loaded_head = find_head(loaded)
    assert loaded_head.units == 3 and loaded_head.capacity == 8
    np.testing.assert_allclose(numpy(loaded(x)), numpy(model(x)), rtol=1e-6)
    assert int(numpy(loaded_head.weights[2])) == 3


def test_load_refuses_weights_of_another_width():
    head = ki.ExpandableDense(3, capacity=8)
    head.build((None, 5))
    with pytest.raises(ValueError, match=r"shape \(5, 3\)"):
        head.load_own_variables({"0": np.zeros((5, 4)), "1": np.zeros(3)})
    with pytest.raises(ValueError, match="expected 2 variables"):
        head.load_own_variables({"0": np.zeros((5, 3))})


def test_invalid_capacities_are_refused():
    with pytest.raises(ValueError, match="capacity"):
        ki.ExpandableDense(4, capacity=3)
    with pytest.raises(TypeError, match="capacity"):
        ki.ExpandableDense(4, capacity="8")
    with pytest.raises(ValueError, match="capacity"):
        ki.IncrementalModel(capacity="big")
    with pytest.raises(ValueError, match="capacity"):
        ki.IncrementalModel(capacity=0)
    head = ki.ExpandableDense(2, capacity=4, lora_rank=2)
    with pytest.raises(ValueError, match="LoRA"):
        head.build((None, 5))
    head = ki.ExpandableDense(2, capacity=4)
    head.build((None, 5))
    with pytest.raises(ValueError, match="spare capacity"):
        head.quantize("int8")


def test_growth_keeps_the_optimizer_slots_in_place():
    keras.utils.set_random_seed(0)
    x, y = data(64, classes=2)
    model = compiled(ki.ExpandableDense(2, capacity=4, name="head"))
    model.fit(x, y, epochs=1, verbose=0)
    head = find_head(model)
    slots = [v for v in model.optimizer.variables if tuple(v.shape) == (16, 4)]
    assert len(slots) == 2
    old = [numpy(s).copy() for s in slots]
    # The spare columns took no gradient: their moments are zero.
    for value in old:
        np.testing.assert_array_equal(value[:, 2:], 0.0)
    ki.expand(model, 1)
    now = [v for v in model.optimizer.variables if tuple(v.shape) == (16, 4)]
    assert all(a is b for a, b in zip(now, slots, strict=True))
    for slot, value in zip(slots, old, strict=True):
        np.testing.assert_array_equal(numpy(slot)[:, :2], value[:, :2])
        np.testing.assert_array_equal(numpy(slot)[:, 2:], 0.0)
    x3, y3 = data(64, classes=3, seed=1)
    model.fit(x3, y3, epochs=1, verbose=0)
    assert model.predict(x3, verbose=0).shape == (64, 3)
    np.testing.assert_array_equal(numpy(head.kernel)[:, 3:], 0.0)


def test_expand_allocates_capacity_on_a_built_head():
    keras.utils.set_random_seed(0)
    x, y = data(32, classes=2)
    model = compiled(ki.ExpandableDense(2, name="head"))
    model.fit(x, y, epochs=1, verbose=0)
    before = numpy(model.predict(x, verbose=0))
    ki.expand(model, 0, capacity=8)
    head = find_head(model)
    assert head.units == 2 and tuple(head.kernel.shape) == (16, 8)
    np.testing.assert_allclose(
        numpy(model.predict(x, verbose=0)), before, rtol=1e-5, atol=1e-6
    )
    model.fit(x, y, epochs=1, verbose=0)  # The optimizer followed.


def stages(classes_per_stage=2, count=3, per_class=32):
    """Stage arrays whose sizes are whole batches of 32 (with and without
    the 32 exemplars replayed), so that every step has one shape."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(classes_per_stage * count, 8)) * 3
    result = []
    for stage in range(count):
        classes = range(
            stage * classes_per_stage, (stage + 1) * classes_per_stage
        )
        x = np.concatenate(
            [centers[c] + rng.normal(size=(per_class, 8)) for c in classes]
        ).astype("float32")
        y = np.repeat(list(classes), per_class)
        result.append((x, y))
    return result


def run(capacity, strategy="default", callbacks=(), softmax=False):
    keras.utils.set_random_seed(0)
    if softmax:
        model = compiled(
            ki.ExpandableDense(0, activation="softmax", name="head"),
            loss=keras.losses.SparseCategoricalCrossentropy(),
        )
    else:
        model = compiled(ki.ExpandableDense(0, name="head"))
    inc = ki.IncrementalModel(
        model=model, strategy=strategy, memory_size=32, capacity=capacity
    )
    losses = []
    for x, y in stages():
        xs, ys = inc.prepare(x, y)
        history = model.fit(
            xs,
            ys,
            epochs=2,
            batch_size=32,
            shuffle=False,
            verbose=0,
            callbacks=[inc, *callbacks],
        )
        losses.append(history.history["loss"])
    return model, inc, np.array(losses)


@pytest.mark.parametrize(
    "capacity, softmax, allocated",
    [(16, False, 16), (4, False, 8), (16, True, 16)],
    ids=["logits", "doubled-at-the-third-stage", "softmax-head"],
)
def test_spare_capacity_trains_as_the_exact_head(capacity, softmax, allocated):
    """The default strategy (replay, balanced loss, distillation, weight
    aligning, label smoothing) gives the same losses and predictions with
    spare capacity as without: on logits, on a softmax head (whose logits
    strategies read back from probabilities), and across a doubling."""
    x_test = np.concatenate([x for x, _ in stages()])
    exact, inc_exact, losses_exact = run(None, softmax=softmax)
    spare, inc_spare, losses_spare = run(capacity, softmax=softmax)
    assert find_head(spare).capacity == allocated
    assert find_head(exact).capacity is None
    # The first stage, and the first epoch of the second (where replay,
    # distillation and the balanced weights first act), agree to rounding;
    # later, rounding differences of the wider products grow with training
    # (on PyTorch most), while a wrong mask would move a loss by far more.
    np.testing.assert_allclose(losses_spare[0], losses_exact[0], rtol=1e-5)
    np.testing.assert_allclose(
        losses_spare[1, 0], losses_exact[1, 0], rtol=1e-4
    )
    np.testing.assert_allclose(losses_spare, losses_exact, rtol=1e-2)
    predicted = numpy(spare.predict(x_test, verbose=0))
    expected = numpy(exact.predict(x_test, verbose=0))
    assert predicted.shape == expected.shape == (len(x_test), 6)
    np.testing.assert_allclose(predicted, expected, atol=0.1)
    agree = np.mean(predicted.argmax(-1) == expected.argmax(-1))
    assert agree >= 0.98
    # Nothing the stage carried stays on the model.
    assert not any(
        isinstance(m, stage_variables.StageVariables) for m in spare.metrics
    )


def test_checkpoint_of_a_head_with_capacity_restores(tmp_path):
    path = os.path.join(tmp_path, "run", "stages.keras")
    keras.utils.set_random_seed(0)
    model = compiled(ki.ExpandableDense(0, name="head"))
    inc = ki.IncrementalModel(
        model=model, memory_size=32, capacity=8, checkpoint=path
    )
    for x, y in stages()[:2]:
        xs, ys = inc.prepare(x, y)
        model.fit(xs, ys, epochs=1, batch_size=32, verbose=0, callbacks=[inc])
    restored, inc2 = ki.IncrementalModel.restore(path)
    head = find_head(restored)
    assert head.units == 4 and head.capacity == 8
    x, y = stages()[2]
    np.testing.assert_allclose(
        numpy(restored.predict(x, verbose=0)),
        numpy(model.predict(x, verbose=0)),
        rtol=1e-5,
        atol=1e-6,
    )
    xs, ys = inc2.prepare(x, y)
    restored.fit(xs, ys, epochs=1, batch_size=32, verbose=0, callbacks=[inc2])
    assert head.units == 6 and tuple(head.kernel.shape)[-1] == 8


def test_one_hot_targets_need_no_capacity():
    model = compiled(
        ki.ExpandableDense(0, name="head"),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    inc = ki.IncrementalModel(model=model, capacity=8)
    x, y = stages()[0]
    with pytest.raises(ValueError, match="sparse loss"):
        inc.prepare(x, y)
    xs, ys = ki.IncrementalModel(model=model).prepare(x, y)
    with pytest.raises(ValueError, match="sparse loss"):
        model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    assert find_head(model).units == 0 and find_head(model).capacity is None


def test_auto_capacity_is_for_jax():
    model, _, _ = run("auto", strategy="replay")
    head = find_head(model)
    if JAX:
        assert head.capacity == AUTO_CAPACITY
    else:
        assert head.capacity is None


@pytest.mark.skipif(not JAX, reason="JAX compiles a train step per shape")
def test_jax_compiles_the_train_step_once():
    """Three stages, every batch of one shape: one compilation."""
    import jax

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling jit(train_step)"):
                records.append(message)

    handler = Collect()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        model, _, _ = run(16)
        # Without spare capacity: one per stage.
        spare = len(records)
        records.clear()
        run(None)
        exact = len(records)
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    assert spare == 1
    assert exact == 3


def test_stage_variables_are_carried_through_the_step_and_dropped():
    keras.utils.set_random_seed(0)
    x, y = data(32, classes=2)
    model = compiled(ki.ExpandableDense(2, name="head"))
    model.fit(x, y, epochs=1, verbose=0)
    scale = keras.Variable(0.0, trainable=False, name="scale")
    base = type(model).compute_loss

    def compute_loss(
        x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = base(model, x, y, y_pred, sample_weight, training=training)
        return loss + scale

    model.compute_loss = compute_loss
    compat.remake_compiled_functions(model)
    stage_variables.carry(model, [scale])
    carried = [
        m
        for m in model.metrics
        if isinstance(m, stage_variables.StageVariables)
    ]
    assert len(carried) == (1 if JAX else 0)
    losses = []
    for value in (0.0, 10.0):
        scale.assign(value)
        history = model.fit(x, y, epochs=1, verbose=0, shuffle=False)
        losses.append(history.history["loss"][0])
        assert set(history.history) == {"loss", "accuracy"}
    # The step read the new value (on JAX: as state, not a constant).
    assert losses[1] - losses[0] == pytest.approx(10.0, abs=0.5)
    assert float(numpy(scale)) == 10.0
    stage_variables.drop(model)
    assert not any(
        isinstance(m, stage_variables.StageVariables) for m in model.metrics
    )
    del model.compute_loss


def test_a_remade_function_is_traced_anew_while_the_old_one_lives():
    """JAX keys traces by the bound `train_step`; a function kept alive (a
    stage's, kept for the next stage) must not lend its trace to a new one
    of the same shapes, with the Python values it was traced with."""
    x, y = data(32, classes=2)
    model = compiled(ki.ExpandableDense(2, name="head"))
    model.offset = 0.0
    base = type(model).compute_loss

    def compute_loss(
        x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = base(model, x, y, y_pred, sample_weight, training=training)
        return loss + model.offset

    model.compute_loss = compute_loss
    first = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    kept = model.test_function
    model.offset = 10.0
    compat.remake_compiled_functions(model)
    second = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert kept is not model.test_function
    assert second - first == pytest.approx(10.0, abs=1e-3)


def test_failed_allocation_leaves_the_head_as_it_was(monkeypatch):
    from keras_incremental.models import growth

    keras.utils.set_random_seed(0)
    x, y = data(32, classes=2)
    model = compiled(ki.ExpandableDense(2, name="head"))
    model.fit(x, y, epochs=1, verbose=0)
    head = find_head(model)
    weights = [numpy(w) for w in model.weights]

    def fail(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(growth, "_plan_growth", fail)
    with pytest.raises(RuntimeError, match="injected"):
        ki.expand(model, 0, capacity=8)
    assert head.capacity is None and len(head.weights) == 2
    for before, after in zip(weights, model.weights, strict=True):
        np.testing.assert_array_equal(before, numpy(after))
    model.fit(x, y, epochs=1, verbose=0)


def test_reserve_is_for_unbuilt_layers():
    head = ki.ExpandableDense(2)
    head.reserve(4)
    head.expand(3)  # Unbuilt: the capacity follows the units.
    assert head.capacity == 8
    model_with(head)
    assert tuple(head.kernel.shape) == (16, 8)
    with pytest.raises(ValueError, match="expand\\(model, 0"):
        head.reserve(32)
    with pytest.raises(ValueError, match="LoRA"):
        head.enable_lora(2)


def test_layouts_whose_masks_would_not_hold_get_no_capacity():
    x, y = stages()[0]
    regularized = compiled(
        ki.ExpandableDense(0, activity_regularizer="l2", name="head")
    )
    with pytest.raises(ValueError, match="activity regularizer"):
        ki.IncrementalModel(model=regularized, capacity=8).prepare(x, y)
    dropped = model_with(ki.ExpandableDense(0, name="head"))
    dropped = keras.Sequential([dropped, keras.layers.Dropout(0.5)])
    dropped.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with pytest.raises(ValueError, match="Dropout"):
        ki.IncrementalModel(model=dropped, capacity=8).prepare(x, y)
    # "auto" leaves them (and losses not named sparse) without capacity.

    def my_loss(y_true, y_pred):
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                y_true, y_pred, from_logits=True
            )
        )

    custom = compiled(ki.ExpandableDense(0, name="head"), loss=my_loss)
    for model in (regularized, dropped, custom):
        inc = ki.IncrementalModel(model=model, strategy="replay")
        model.fit(*inc.prepare(x, y), epochs=1, verbose=0, callbacks=[inc])
        assert find_head(model).capacity is None


def test_restore_can_keep_a_run_without_capacity(tmp_path):
    path = os.path.join(tmp_path, "stages.keras")
    keras.utils.set_random_seed(0)
    model = compiled(ki.ExpandableDense(0, name="head"))
    inc = ki.IncrementalModel(model=model, capacity=None, checkpoint=path)
    x, y = stages()[0]
    model.fit(*inc.prepare(x, y), epochs=1, verbose=0, callbacks=[inc])
    restored, inc2 = ki.IncrementalModel.restore(path, capacity=None)
    x, y = stages()[1]
    restored.fit(*inc2.prepare(x, y), epochs=1, verbose=0, callbacks=[inc2])
    assert find_head(restored).capacity is None
    assert find_head(restored).units == 4
