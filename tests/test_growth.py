import keras
import numpy as np
import pytest
from helpers import TENSORFLOW
from helpers import assert_same_logits
from helpers import compiled_mlp
from helpers import data
from helpers import mlp
from helpers import tensorflow_only
from helpers import values

import keras_incremental as ki
from keras_incremental import compat


def trained(optimizer="adam", jit_compile=False, units=3, epochs=1):
    model = compiled_mlp(units, optimizer=optimizer, jit_compile=jit_compile)
    x, y = data(classes=units)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


def test_expand_keeps_old_columns_paths_and_logits():
    model = trained()
    x, _ = data()
    head = model.get_layer("head")
    kernel, bias = values(head.weights)
    paths = [v.path for v in model.weights]
    before = model.predict(x, verbose=0)

    assert ki.expand(model, 2) is head

    assert head.units == 5
    new_kernel, new_bias = values(head.weights)
    np.testing.assert_array_equal(new_kernel[:, :3], kernel)
    np.testing.assert_array_equal(new_bias[:3], bias)
    assert [v.path for v in model.weights] == paths
    after = model.predict(x, verbose=0)
    assert after.shape == (64, 5)
    assert_same_logits(after[:, :3], before)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_after_expand_trains_the_grown_kernel(jit_compile):
    model = trained(jit_compile=jit_compile)
    ki.expand(model, 2)
    head = model.get_layer("head")
    kernel = head.kernel.numpy()
    x, y = data(classes=5, seed=1)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    trained_kernel = head.kernel.numpy()
    assert trained_kernel.shape == (16, 5)
    assert not np.allclose(trained_kernel[:, :3], kernel[:, :3])
    assert not np.allclose(trained_kernel[:, 3:], kernel[:, 3:])
    assert model.evaluate(x, y, verbose=0)[0] > 0


def _mixed_precision_optimizer():
    keras.config.set_dtype_policy("mixed_float16")
    return keras.optimizers.Adam()


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(amsgrad=True),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "rmsprop": lambda: keras.optimizers.RMSprop(momentum=0.5, centered=True),
    "adamw_ema": lambda: keras.optimizers.AdamW(use_ema=True),
    "mixed_precision": _mixed_precision_optimizer,
    "multi": lambda: keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(
            keras.optimizers.SGD(0.1, momentum=0.9),
            {".*head.*": keras.optimizers.Adam()},
        )
    ),
}


def _slot_states(optimizer):
    """Each optimizer variable's value, by name, for the head and the rest."""
    return {v.path: np.array(v.numpy()) for v in optimizer.variables}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_follows_growth(name):
    optimizer = OPTIMIZERS[name]()
    model = trained(optimizer=optimizer, epochs=2)
    optimizer = model.optimizer
    before = _slot_states(optimizer)
    iterations = int(optimizer.iterations.numpy())
    head_kernel = model.get_layer("head").kernel
    grown = sum(1 for v in optimizer.variables if v.shape == head_kernel.shape)
    assert grown > 0

    ki.expand(model, 2)

    after = _slot_states(optimizer)
    assert set(after) == set(before)
    assert int(optimizer.iterations.numpy()) == iterations
    head = model.get_layer("head")
    changed = 0
    for path, old in before.items():
        new = after[path]
        if old.shape == new.shape:
            np.testing.assert_array_equal(new, old, err_msg=path)
            continue
        changed += 1
        np.testing.assert_array_equal(new[..., :3], old, err_msg=path)
        if path.endswith("_average"):
            weight = head.kernel if new.ndim == 2 else head.bias
            np.testing.assert_array_equal(
                new[..., 3:], weight.numpy()[..., 3:], err_msg=path
            )
        else:
            assert not new[..., 3:].any(), path
    assert changed >= 2
    if name == "mixed_precision":
        inner = optimizer.inner_optimizer
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert int(inner.iterations.numpy()) == iterations
        step_counter = optimizer.step_counter.numpy()
        assert step_counter == before[optimizer.step_counter.path]

    x, y = data(classes=5, seed=2)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert int(optimizer.iterations.numpy()) == iterations + 4


class GrowAt(keras.callbacks.Callback):
    def __init__(self, hook, epoch=0):
        super().__init__()
        self.hook = hook
        self.epoch = epoch
        self.grown = False

    def on_train_begin(self, logs=None):
        if self.hook == "on_train_begin":
            self._grow()

    def on_epoch_begin(self, epoch, logs=None):
        if self.hook == "on_epoch_begin" and epoch == self.epoch:
            self._grow()

    def _grow(self):
        ki.expand(self.model, 2)
        assert self.model.train_function is not None
        self.grown = True


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("hook", ["on_train_begin", "on_epoch_begin"])
def test_growth_from_a_callback(hook, jit_compile):
    model = trained(jit_compile=jit_compile)
    # Labels valid for both widths, as the growth comes between epochs.
    x, y = data(classes=3, seed=3)
    callback = GrowAt(hook, epoch=1)
    history = model.fit(
        x, y, epochs=2, batch_size=16, verbose=0, callbacks=[callback]
    )
    assert callback.grown
    assert model.get_layer("head").kernel.shape == (16, 5)
    assert model.predict(x, verbose=0).shape == (64, 5)
    assert np.all(np.isfinite(history.history["loss"]))
    kernel = model.get_layer("head").kernel.numpy()
    x, y = data(classes=5, seed=3)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    trained_kernel = model.get_layer("head").kernel.numpy()
    assert not np.allclose(trained_kernel[:, 3:], kernel[:, 3:])


def test_save_after_growth_and_load_without_custom_objects(tmp_path):
    model = trained(optimizer=keras.optimizers.AdamW(use_ema=True))
    ki.expand(model, 2)
    x, y = data(classes=5, seed=4)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = str(tmp_path / "grown.keras")
    model.save(path)

    loaded = keras.models.load_model(path)

    assert loaded.get_layer("head").units == 5
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    assert type(loaded.optimizer) is type(model.optimizer)
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for saved, restored in zip(
        model.optimizer.variables, loaded.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy())
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    ki.expand(loaded, 1)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert loaded.predict(x, verbose=0).shape == (64, 6)


def _replicas(variable):
    return [np.array(v.numpy()) for v in variable.value.values]


@tensorflow_only
def test_growth_under_mirrored_strategy():
    import tensorflow as tf

    # Each MirroredStrategy's collective all-reduce numbers its instances
    # from the same start, and two in one process (this suite's) collide;
    # reducing through one device uses no collective ops.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"],
        cross_device_ops=tf.distribute.ReductionToOneDevice(),
    )
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = compiled_mlp(3)
    x, y = data(classes=3)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)

    ki.expand(model, 2)  # outside the scope, as from a callback

    head = model.get_layer("head")
    assert isinstance(head.kernel.value, tf.distribute.DistributedValues)
    for slot in model.optimizer.variables:
        if slot.shape == head.kernel.shape:
            assert isinstance(slot.value, tf.distribute.DistributedValues)
    x, y = data(classes=5, seed=5)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for variable in model.trainable_variables + model.optimizer.variables:
        first, second = _replicas(variable)
        np.testing.assert_array_equal(first, second, err_msg=variable.path)
    assert model.predict(x, verbose=0).shape == (64, 5)


def test_f1_score_is_resized_after_growth():
    model = mlp(3)
    model.compile(
        optimizer="adam",
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.F1Score(average="macro")],
    )
    x, y = data(classes=3)
    model.fit(x, keras.ops.one_hot(y, 3), epochs=1, verbose=0)

    ki.expand(model, 2)

    x, y = data(classes=5, seed=6)
    onehot = np.eye(5, dtype="float32")[y]
    logs = model.evaluate(x, onehot, verbose=0, return_dict=True)
    predicted = model.predict(x, verbose=0).argmax(-1)
    metric = keras.metrics.F1Score(average="macro")
    metric.update_state(onehot, np.eye(5, dtype="float32")[predicted])
    assert logs["f1_score"] == pytest.approx(float(metric.result()), abs=1e-6)
    model.fit(x, onehot, epochs=1, verbose=0)


def test_metric_with_fixed_class_count_stops_growth_unchanged():
    model = mlp(3)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.MeanIoU(num_classes=3, sparse_y_pred=False)],
    )
    x, y = data(classes=3)
    model.fit(x, y, epochs=1, verbose=0)
    weights = values(model.weights)
    with pytest.raises(ValueError, match="per-class state.*[Rr]ecompile"):
        ki.expand(model, 2)
    _assert_unchanged(model, weights, units=3)


def _assert_unchanged(model, weights, units):
    assert model.get_layer("head").units == units
    for before, after in zip(weights, values(model.weights), strict=True):
        np.testing.assert_array_equal(before, after)
    x, y = data(classes=units, seed=7)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert model.predict(x, verbose=0).shape == (64, units)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(n=-1), ValueError, r"`n`.*>= 0.*Received: n=-1"),
        (dict(n=1.5), TypeError, r"`n`.*integer.*Received: n=1.5"),
        (dict(n="2"), TypeError, r"Received: n='2'"),
        (dict(n=1, layer="nope"), ValueError, r"No layer named 'nope'"),
        (dict(n=1, layer="body"), TypeError, r"'body' is a `Dense`.*expected"),
        (dict(n=1, layer=3), TypeError, r"layer name, a layer or `None`"),
        (
            dict(n=1, layer=keras.layers.Dense(2, name="stranger")),
            ValueError,
            r"not part of model",
        ),
    ],
)
def test_bad_arguments_leave_the_model_unchanged(kwargs, error, pattern):
    model = trained()
    weights = values(model.weights)
    slots = values(model.optimizer.variables)
    with pytest.raises(error, match=pattern):
        ki.expand(model, **kwargs)
    for before, after in zip(
        slots, values(model.optimizer.variables), strict=True
    ):
        np.testing.assert_array_equal(before, after)
    _assert_unchanged(model, weights, units=3)


def test_model_without_expandable_dense():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no `ExpandableDense`.*Received"):
        ki.expand(model, 1)
    with pytest.raises(TypeError, match="Expected a `keras.Model`"):
        ki.expand("model.keras", 1)


def test_lora_enabled_head_is_refused_unchanged():
    model = trained()
    model.get_layer("head").enable_lora(2)
    weights = values(model.weights)
    with pytest.raises(ValueError, match="LoRA enabled.*expected a layer"):
        ki.expand(model, 1)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    _assert_unchanged(model, weights, units=3)


def test_quantized_head_is_refused_unchanged():
    model = trained()
    x, _ = data()
    model.quantize("int8")
    assert model.get_layer("head").quantization_mode == "int8"
    before = model.predict(x, verbose=0)
    with pytest.raises(ValueError, match="quantized.*expected an unquantized"):
        ki.expand(model, 1)
    assert model.get_layer("head").units == 3
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)


def test_optimizer_with_factored_slots_is_refused_unchanged():
    model = trained(optimizer=keras.optimizers.Adafactor())
    weights = values(model.weights)
    with pytest.raises(ValueError, match="slot.*shape.*expected slots"):
        ki.expand(model, 2)
    _assert_unchanged(model, weights, units=3)


def test_expand_before_compile_and_from_zero_units():
    model = mlp(0)
    ki.expand(model, 3)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = data(classes=3)
    model.fit(x, y, epochs=1, verbose=0)
    ki.expand(model, 2)
    model.fit(x, y, epochs=1, verbose=0)
    assert model.predict(x, verbose=0).shape == (64, 5)


def test_stale_functions_are_remade_when_first_used():
    model = trained()
    x, _ = data()
    model.predict(x, verbose=0)
    old_predict, old_train = model.predict_function, model.train_function
    ki.expand(model, 2)
    if TENSORFLOW:
        import tensorflow as tf

        # Introspection remakes the function too: a tf.function of the
        # new width.
        concrete = model.predict_function.get_concrete_function(
            [(tf.TensorSpec((None, 8), "float32"),)]
        )
        assert concrete.structured_outputs.shape[-1] == 5
    assert model.predict_function is not old_predict
    x5, y5 = data(classes=5, seed=3)
    model.fit(x5, y5, epochs=1, verbose=0)
    assert model.train_function is not old_train
    assert model.predict(x, verbose=0).shape == (64, 5)


def test_a_make_function_override_that_returns_the_function():
    class Returning(keras.Sequential):
        """Returns the remade function, leaving the attribute as it was."""

        def make_predict_function(self, force=False):
            stale = self.predict_function
            super().make_predict_function(force=force)
            if stale is None:
                return self.predict_function
            made, self.predict_function = self.predict_function, stale
            return made

    model = Returning(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, name="body"),
            ki.ExpandableDense(3, name="head"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, _ = data()
    model.predict(x, verbose=0)
    ki.expand(model, 2)
    assert model.predict(x, verbose=0).shape == (64, 5)


def _failing_on_call(function, number, accept=lambda *args: True):
    """`function`, raising on its `number`-th accepted call."""
    calls = []

    def failing(*args, **kwargs):
        if accept(*args):
            calls.append(args)
            if len(calls) == number:
                raise RuntimeError("injected failure")
        return function(*args, **kwargs)

    return failing


def _optimizer_state(optimizer):
    return [
        (v, tuple(v.shape), np.array(v.numpy())) for v in optimizer.variables
    ]


def _assert_same_optimizer_state(optimizer, state):
    now = optimizer.variables
    assert len(now) == len(state)
    for variable, (before, shape, value) in zip(now, state, strict=True):
        assert variable is before, variable.path
        assert tuple(variable.shape) == shape, variable.path
        np.testing.assert_array_equal(variable.numpy(), value, variable.path)


def _failed_growth_changes_nothing(model, monkeypatch, patch):
    optimizer = model.optimizer
    head = model.get_layer("head")
    weights = list(head.weights)
    kernel, bias = values(weights)
    state = _optimizer_state(optimizer)
    iterations = int(optimizer.iterations.numpy())
    x, _ = data()
    before = model.predict(x, verbose=0)

    patch(monkeypatch)
    with pytest.raises(RuntimeError, match="injected failure"):
        ki.expand(model, 2)
    monkeypatch.undo()

    assert head.units == 3
    assert len(head.weights) == 2
    assert all(a is b for a, b in zip(head.weights, weights, strict=True))
    assert head.kernel.shape == (16, 3) and head.bias.shape == (3,)
    np.testing.assert_array_equal(head.kernel.numpy(), kernel)
    np.testing.assert_array_equal(head.bias.numpy(), bias)
    _assert_same_optimizer_state(optimizer, state)
    assert int(optimizer.iterations.numpy()) == iterations
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)

    # The model is as good as new: it grows and trains afterwards.
    ki.expand(model, 2)
    x5, y5 = data(classes=5, seed=8)
    model.fit(x5, y5, epochs=1, batch_size=16, verbose=0)
    assert model.predict(x, verbose=0).shape == (64, 5)
    assert head.kernel.shape == (16, 5)


@tensorflow_only
def test_failed_slot_growth_in_place_rolls_everything_back(monkeypatch):
    model = trained(optimizer=keras.optimizers.AdamW(use_ema=True))
    head_ids = {id(v) for v in model.get_layer("head").weights}

    def patch(monkeypatch):
        # The second slot to grow fails, after the head and a first slot.
        failing = _failing_on_call(
            compat.grow_variable,
            2,
            accept=lambda variable, *rest: id(variable) not in head_ids,
        )
        monkeypatch.setattr(compat, "grow_variable", failing)

    _failed_growth_changes_nothing(model, monkeypatch, patch)


@pytest.mark.parametrize(
    "name", ["new_optimizer_variable", "replace_optimizer_variable"]
)
def test_failed_slot_replacement_rolls_everything_back(name, monkeypatch):
    model = trained(optimizer=keras.optimizers.AdamW(use_ema=True))

    def patch(monkeypatch):
        # Variables replaced rather than grown, as off TensorFlow.
        monkeypatch.setattr(compat, "growable", lambda variable: False)
        failing = _failing_on_call(getattr(compat, name), 2)
        monkeypatch.setattr(compat, name, failing)

    _failed_growth_changes_nothing(model, monkeypatch, patch)


def _fresh_slots(optimizer, variables):
    """Slot values of a fresh optimizer of the same config, by name."""
    fresh = type(optimizer).from_config(optimizer.get_config())
    fresh.build(variables)
    return {v.name: np.array(v.numpy()) for v in fresh.variables}


@pytest.mark.parametrize("use_ema", [False, True])
def test_schedule_free_momentum_of_new_units_starts_at_their_value(use_ema):
    optimizer = keras.optimizers.ScheduleFreeAdamW(use_ema=use_ema)
    model = trained(optimizer=optimizer, epochs=2)
    head = model.get_layer("head")
    before = {v.name: np.array(v.numpy()) for v in optimizer.variables}

    ki.expand(model, 2)

    after = {v.name: np.array(v.numpy()) for v in optimizer.variables}
    fresh = _fresh_slots(optimizer, [head.kernel, head.bias])
    kernel = head.kernel.numpy()
    checked = set()
    for name, value in after.items():
        if value.shape[-1:] != (5,):
            np.testing.assert_array_equal(value, before[name], name)
            continue
        weight = kernel if value.ndim == 2 else head.bias.numpy()
        np.testing.assert_array_equal(value[..., :3], before[name], name)
        if name.endswith("_momentum") or name.endswith("_average"):
            # Schedule-free `z` starts at the variable; so does an EMA.
            np.testing.assert_array_equal(value[..., 3:], weight[..., 3:])
        else:
            assert not value[..., 3:].any(), name
        if not name.endswith("_average"):
            np.testing.assert_array_equal(
                value[..., 3:], fresh[name][..., 3:], name
            )
        checked.add(name.rpartition("_")[2])
    expected = {"momentum", "velocity"} | ({"average"} if use_ema else set())
    assert checked == expected
    assert np.abs(kernel[:, 3:]).min() > 0
    x, y = data(classes=5, seed=9)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.all(np.isfinite(model.predict(x, verbose=0)))
