"""The Keras internals that `keras_incremental/compat.py` touches.

Tests for each section of `compat.py` that exercise the internal itself:
when Keras renames or changes it, the test fails with a message naming it,
rather than the package failing somewhere far from the cause.
"""

import keras
import numpy as np
import pytest

import keras_incremental as ki
from keras_incremental import compat

TENSORFLOW = keras.backend.backend() == "tensorflow"
only_tensorflow = pytest.mark.skipif(
    not TENSORFLOW, reason="a TensorFlow internal"
)


def changed(internal, what):
    return (
        f"Keras internal {internal} changed: {what}. Update its section of "
        "keras_incremental/compat.py."
    )


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def built_dense(units=2, features=3):
    layer = keras.layers.Dense(units)
    layer.build((None, features))
    return layer


def assert_has(obj, internal, attributes):
    for attribute in attributes:
        assert hasattr(obj, attribute), changed(
            internal, f"`{type(obj).__name__}` has no `{attribute}`"
        )


# Layers' tracker: `_tracker`


def test_layers_trainable_variables_list():
    layer = built_dense()
    assert compat.tracked_as_trainable(layer, layer.kernel), changed(
        "`Layer._trainable_variables`", "does not hold the kernel"
    )
    layer.trainable = False
    # A frozen layer's kernel keeps its kind; only its flag changes.
    assert not layer.kernel.trainable
    assert compat.tracked_as_trainable(layer, layer.kernel), changed(
        "`Layer._trainable_variables`", "loses a frozen layer's kernel"
    )
    with compat.unlocked_tracker(layer):
        extra = layer.add_weight(shape=(), name="extra", trainable=False)
    assert not compat.tracked_as_trainable(layer, extra), changed(
        "`Layer._trainable_variables`", "holds a non-trainable weight"
    )


def test_layers_tracker():
    layer = built_dense()
    tracker = getattr(layer, "_tracker", None)
    assert tracker is not None, changed("`Layer._tracker`", "no tracker")
    assert_has(
        tracker,
        "`Layer._tracker`",
        ["locked", "lock", "unlock", "untrack", "config", "stored_ids"],
    )
    assert tracker.locked, changed(
        "`Layer._tracker`", "a built layer's tracker is not locked"
    )
    for store in ("trainable_variables", "non_trainable_variables"):
        assert store in tracker.config and store in tracker.stored_ids, changed(
            "`Tracker.config`", f"no '{store}' store"
        )
    kernel, bias = layer.kernel, layer.bias
    assert list(tracker.config["trainable_variables"][1]) == [kernel, bias], (
        changed("`Tracker.config`", "a store is not `(kind, list)`")
    )

    with compat.unlocked_tracker(layer):
        extra = layer.add_weight(shape=(), name="extra")
    assert tracker.locked, changed("`Tracker.lock`", "did not lock again")
    assert [w.name for w in layer.weights] == ["kernel", "bias", "extra"]
    compat.untrack_variable(layer, extra)
    assert [w.name for w in layer.weights] == ["kernel", "bias"], changed(
        "`Tracker.untrack`", "the variable stays in the layer's weights"
    )

    # Growth replaces a variable, and puts it back when it fails.
    state = compat.layer_variables_state(layer)
    with compat.unlocked_tracker(layer):
        compat.untrack_variable(layer, kernel)
        wider = layer.add_weight(shape=(3, 4), name="kernel")
        compat.set_dense_kernel(layer, wider)
    assert layer.weights == [bias, wider]
    compat.restore_layer_variables(layer, state)
    assert layer.weights == [kernel, bias], changed(
        "`Tracker.config` / `Tracker.stored_ids`",
        "restoring the stores did not give the layer its variables back",
    )
    assert layer.kernel is kernel
    compat.untrack_variable(layer, bias)
    assert layer.weights == [kernel], changed(
        "`Tracker.stored_ids`", "out of step with the stores after a restore"
    )


def test_layers_tracker_attributes():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    metric = keras.metrics.Mean(name="carried")
    with compat.unlocked_tracker(model):
        model.carried_metric = metric
    assert metric in model.metrics, changed(
        "`Layer.__setattr__` tracking", "a metric attribute is not tracked"
    )
    compat.detach_tracked(model, "carried_metric")
    assert metric not in model.metrics, changed(
        "`Layer._tracker`", "an untracked metric stays in `model.metrics`"
    )
    assert not hasattr(model, "carried_metric")
    compat.detach_tracked(model, "carried_metric")  # Nothing to detach.


# TensorFlow's tracked lists: `ListWrapper._storage`, `_update_snapshot`


@only_tensorflow
def test_tensorflow_list_wrapper():
    a = keras.Variable(np.zeros((2,)), name="a")
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build([a])
    items = optimizer._variables
    assert_has(
        items, "TensorFlow's `ListWrapper`", ["_storage", "_update_snapshot"]
    )
    assert list(items._storage) == list(items), changed(
        "`ListWrapper._storage`", "it is not the list's contents"
    )
    wider = keras.Variable(np.zeros((3,)), name=items[-1].name)
    compat._set_list_item(items, len(items) - 1, wider)
    assert items[-1] is wider, changed(
        "`ListWrapper._storage`", "writing it does not change the list"
    )
    compat._set_list_contents(items, list(items)[:1])
    assert len(items) == 1, changed(
        "`ListWrapper._storage`", "writing it does not change the list"
    )


# Dense layers: `Dense._kernel`, `Layer._not_implemented_error`


def test_dense_kernel_variable():
    layer = built_dense()
    assert compat.dense_kernel(layer) is layer.kernel, changed(
        "`Dense._kernel`", "it is not the kernel variable"
    )
    with compat.unlocked_tracker(layer):
        compat.untrack_variable(layer, layer.kernel)
        new = layer.add_weight(shape=(3, 2), initializer="ones", name="kernel")
        compat.set_dense_kernel(layer, new)
    assert layer.kernel is new and layer.weights[-1] is new
    outputs = numpy(layer(np.ones((1, 3), "float32")))
    assert np.allclose(outputs, [[3.0, 3.0]]), changed(
        "`Dense._kernel`", "`call` does not compute with it"
    )

    lora = built_dense()
    lora.enable_lora(1)
    assert isinstance(compat.dense_kernel(lora), keras.Variable), changed(
        "`Dense._kernel`", "with LoRA, it is not the stored kernel variable"
    )


def test_not_implemented_error():
    layer = built_dense()
    error = compat.not_implemented_error(layer, layer.quantize)
    assert isinstance(error, NotImplementedError), changed(
        "`Layer._not_implemented_error`", f"returned {error!r}"
    )
    assert "`quantize`" in str(error), changed(
        "`Layer._not_implemented_error`", "the method is not named"
    )


# Variables: `_value`, `_shape`, `_validate_shape`; `_distribute_strategy`


def test_variables_value_and_shape():
    start = np.arange(6, dtype="float32").reshape(2, 3)
    variable = keras.Variable(start, name="v")
    assert_has(
        variable, "`keras.Variable`", ["_value", "_shape", "_validate_shape"]
    )
    assert tuple(variable._shape) == (2, 3), changed(
        "`Variable._shape`", f"it is {variable._shape!r}"
    )
    assert tuple(variable._validate_shape((2, 4))) == (2, 4)
    np.testing.assert_array_equal(compat.variable_numpy(variable), start)
    ids = compat.backend_variable_ids([variable])
    assert ids == compat.backend_variable_ids([variable])

    state = compat.variable_state(variable)
    variable.assign(np.zeros((2, 3), "float32"))
    compat.restore_variable(variable, state)
    assert np.array_equal(numpy(variable), start), changed(
        "`Variable._value`", "putting the backend variable back failed"
    )
    with compat.variable_scope_of(variable):
        pass

    wider = np.arange(8, dtype="float32").reshape(2, 4)
    if not TENSORFLOW:
        assert not compat.make_growable(variable)
        assert not compat.grow_variable(variable, wider)
        return
    assert compat.make_growable(variable) and compat.growable(variable), (
        changed("`Variable._value`", "it cannot be backed by a growable one")
    )
    backing = variable._value
    assert backing.shape.as_list() == [2, None]
    assert compat.backend_variable_ids([variable]) != ids
    assert compat.grow_variable(variable, wider)
    assert variable._value is backing and tuple(variable.shape) == (2, 4), (
        changed("`Variable._shape`", "growing in place changed the shape")
    )
    np.testing.assert_array_equal(numpy(variable), wider)
    with compat.fixed_shapes([variable]):
        assert not compat.growable(variable)
        assert variable._value.shape.as_list() == [2, 4]
    assert variable._value is backing
    state = compat.variable_state(variable)
    compat.grow_variable(variable, start)
    compat.restore_variable(variable, state)
    assert tuple(variable.shape) == (2, 4)
    np.testing.assert_array_equal(numpy(variable), wider)


@only_tensorflow
def test_tensorflow_distribute_strategy_of_variables():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        variable = keras.Variable(np.zeros((2, 3), "float32"), name="m")
        optimizer = keras.optimizers.Adam()
    assert getattr(variable.value, "_distribute_strategy", None) is strategy, (
        changed("`tf.Variable._distribute_strategy`", "not the strategy")
    )
    assert getattr(optimizer, "_distribution_strategy", None) is strategy, (
        changed("`Optimizer._distribution_strategy`", "not the strategy")
    )
    with compat.variable_scope_of(variable):
        assert tf.distribute.get_strategy() is strategy
    assert compat.make_growable(variable)
    grown = np.ones((2, 4), "float32")
    compat.grow_variable(variable, grown)
    values = strategy.experimental_local_results(variable.value)
    assert len(values) == 2
    for value in values:
        np.testing.assert_array_equal(value.numpy(), grown)


# Shape inference: `keras.src.backend.common.symbolic_scope`


def test_shape_inference_scope():
    from keras.src.backend import compute_output_spec

    seen = []

    def function(inputs):
        seen.append(compat.in_shape_inference())
        return inputs

    compute_output_spec(function, keras.KerasTensor((2, 3)))
    assert seen == [True], changed(
        "`symbolic_scope.in_symbolic_scope`",
        "`compute_output_spec` does not enter the symbolic scope",
    )
    assert not compat.in_shape_inference()

    if TENSORFLOW:
        import tensorflow as tf

        widths = []

        @tf.function(input_signature=[tf.TensorSpec((None, None))])
        def traced(inputs):
            stated = compat.state_width(tf.identity(inputs), 3)
            free = compat.state_width(tf.identity(inputs), 3, free=True)
            widths.append((stated.shape[-1], free.shape[-1]))
            return inputs

        traced.get_concrete_function()
        assert widths == [(3, None)]


# Optimizers


def test_optimizer_variables_and_slots():
    a = keras.Variable(np.zeros((3, 2), "float32"), name="a")
    b = keras.Variable(np.zeros((2,), "float32"), name="b")
    optimizer = keras.optimizers.Adam()
    optimizer.build([a, b])
    assert_has(
        optimizer,
        "`Optimizer`",
        [
            "_var_key",
            "_trainable_variables",
            "_trainable_variables_indices",
            "_variables",
            "_iterations",
            "_learning_rate",
            "_track_variable",
            "_tracker",
        ],
    )
    assert compat.optimizer_knows(optimizer, b)
    assert compat.optimizer_variable_count(optimizer) == 2
    assert compat.optimizer_variable_index(optimizer, b) == 1, changed(
        "`Optimizer._trainable_variables_indices`", "not indices by `_var_key`"
    )
    kinds = dict(compat.optimizer_slot_lists(optimizer))
    assert set(kinds) == {"_momentums", "_velocities"}, changed(
        "Adam's slot lists", f"found {sorted(kinds)}"
    )
    slot = kinds["_momentums"][1]

    # Growth's moves: a new slot, a new variable in the old one's place.
    new_slot = compat.new_optimizer_variable(
        optimizer, b, slot, np.ones((2,), "float32")
    )
    assert (new_slot.name, new_slot.path) == (slot.name, slot.path)
    compat.replace_optimizer_variable(optimizer, slot, new_slot)
    assert dict(compat.optimizer_slot_lists(optimizer))["_momentums"][1] is (
        new_slot
    ), changed("Adam's `_momentums`", "the slot was not replaced")
    assert any(v is new_slot for v in optimizer.variables), changed(
        "`Optimizer._variables`", "the slot was not replaced"
    )
    assert not any(v is slot for v in optimizer.variables)
    grown = keras.Variable(np.zeros((2,), "float32"), name="b")
    compat.replace_trainable_variable(optimizer, b, grown)
    assert compat.optimizer_knows(optimizer, grown)
    assert not compat.optimizer_knows(optimizer, b)
    assert compat.optimizer_variable_index(optimizer, grown) == 1
    optimizer.apply([keras.ops.ones((3, 2)), keras.ops.ones((2,))])
    assert numpy(grown)[0] < 0, changed(
        "`Optimizer._trainable_variables`",
        "the replaced variable is not updated",
    )

    fresh = compat.fresh_slot_values(
        optimizer, [grown], [np.ones((4,), "float32")], ["_momentums"]
    )
    np.testing.assert_array_equal(fresh["_momentums"][0], np.zeros(4))
    compat.set_optimizer_iterations(optimizer, 7)
    assert int(numpy(optimizer.iterations)) == 7, changed(
        "`Optimizer._iterations`", "it is not the step counter"
    )


def test_optimizer_wrapped_variables():
    a = keras.Variable(np.zeros((2,), "float32"), name="a")
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
    scaled.build([a])
    grown = keras.Variable(np.zeros((2,), "float32"), name="a")
    compat.replace_trainable_variable(scaled, a, grown)
    assert compat.optimizer_knows(scaled, grown), changed(
        "`LossScaleOptimizer._trainable_variables`", "not replaced"
    )

    base = keras.optimizers.SGD()
    mapping = keras.optimizers.OptimizerMap(base)
    multi = keras.optimizers.MultiOptimizer(mapping)
    assert compat.multi_optimizer_map(multi) is mapping, changed(
        "`MultiOptimizer._optimizer_map`", "it is not the map given"
    )


def test_optimizer_learning_rate_and_tracked_variables():
    optimizer = keras.optimizers.SGD(0.5)
    rate = compat.stored_learning_rate(optimizer)
    assert isinstance(rate, keras.Variable), changed(
        "`Optimizer._learning_rate`", f"a float rate is stored as {rate!r}"
    )
    assert float(numpy(rate)) == 0.5
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    scheduled = keras.optimizers.SGD(schedule)
    assert compat.stored_learning_rate(scheduled) is schedule, changed(
        "`Optimizer._learning_rate`", "a schedule is not stored as given"
    )
    extra = keras.Variable(1.0, name="extra", trainable=False)
    compat.track_optimizer_variable(optimizer, extra)
    assert any(v is extra for v in optimizer.variables), changed(
        "`Optimizer._track_variable`", "the variable is not the optimizer's"
    )


# Compile state: `_compile_metrics`, `_compile_loss`, `_compile_config`


def test_compile_state():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    assert_has(
        model,
        "`Trainer`",
        ["_compile_metrics", "_compile_loss", "_compile_config"],
    )
    assert_has(
        model._compile_metrics,
        "`CompileMetrics`",
        ["built", "metrics", "_user_metrics", "_user_weighted_metrics"],
    )
    assert compat.compiled_metrics(model) == []
    assert compat.compiled_metrics_allow_free_width(model)
    x = np.ones((4, 3), "float32")
    model.evaluate(x, np.zeros((4, 2), "float32"), verbose=0)
    names = [m.name for m in compat.compiled_metrics(model)]
    assert "mae" in names, changed(
        "`Trainer._compile_metrics`", f"its built metrics are {names}"
    )
    identity = compat.compile_identity(model)
    model.compile(
        optimizer="sgd", loss="mse", metrics=[keras.metrics.F1Score()]
    )
    assert compat.compile_identity(model) != identity
    assert not compat.compiled_metrics_allow_free_width(model), changed(
        "`CompileMetrics._user_metrics`", "the metrics given are not there"
    )
    adam = keras.optimizers.Adam()
    compat.set_model_optimizer(model, adam)
    assert model.optimizer is adam
    config = model.get_compile_config()["optimizer"]
    assert config["class_name"] == "Adam", changed(
        "`Trainer._compile_config`",
        "`model.save` would write another optimizer",
    )


# Metrics: `Metric._built`, `_tracker`


def test_lazily_built_metric_reset():
    metric = keras.metrics.F1Score()
    assert_has(metric, "`Metric`", ["_built", "_tracker"])
    metric.update_state(np.eye(3, dtype="float32"), np.eye(3, dtype="float32"))
    assert {tuple(v.shape) for v in metric.variables} == {(3,)}
    compat.reset_lazily_built_metric(metric)
    assert metric.variables == [], changed(
        "`Metric._tracker`", "the metric's variables were not untracked"
    )
    metric.update_state(np.eye(5, dtype="float32"), np.eye(5, dtype="float32"))
    assert {tuple(v.shape) for v in metric.variables} == {(5,)}, changed(
        "`FBetaScore._built`", "it does not size its variables again"
    )


# Trainer functions: the cached `*_function`s, the JAX `*_step`


def test_trainer_functions_are_remade():
    head = ki.ExpandableDense(2)
    model = keras.Sequential([keras.Input((3,)), head])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((4, 3), "float32")
    assert model.predict(x, verbose=0).shape == (4, 2)
    assert model.predict_function is not None, changed(
        "`Trainer.predict_function`", "it is not cached after `predict`"
    )
    head.expand(1)
    compat.remake_compiled_functions(model)
    assert model.predict(x, verbose=0).shape == (4, 3), changed(
        "`Trainer.make_predict_function`", "the remade function is stale"
    )
    model.fit(x, np.zeros((4, 3), "float32"), epochs=1, verbose=0)
    function = compat.make_function(model, "train")
    assert callable(model.train_function)
    assert function is None or callable(function)
    if keras.backend.backend() == "jax":
        step = vars(model).get("train_step")
        assert step is not None and step.func is type(model).train_step, (
            changed("the JAX trainer", "`train_step` is not what it jits")
        )


# Callbacks: `CallbackList` calling each callback's `on_train_begin`


def test_run_after_train_end():
    order = []

    class Deferring(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.deferred = compat.run_after_train_end(
                self, lambda: order.append("finish")
            )

        def on_train_end(self, logs=None):
            order.append("deferring")

    class Later(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            order.append("later")

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    deferring = Deferring()
    model.fit(
        np.ones((4, 3), "float32"),
        np.zeros((4, 2), "float32"),
        epochs=1,
        verbose=0,
        callbacks=[deferring, Later()],
    )
    assert deferring.deferred, changed(
        "`CallbackList.on_train_begin`",
        "it does not call each callback's `on_train_begin` itself",
    )
    assert order == ["deferring", "later", "finish"]
    deferring.on_train_begin()
    assert deferring.deferred is False


# Saving: `saving_lib.get_attr_skipset`, `global_state`


def test_saving_skipsets_cached():
    from keras.src.backend.common import global_state

    assert compat.cache_saving_skipsets(), changed(
        "`saving_lib.get_attr_skipset`", "the skip sets are not cached"
    )
    assert (
        global_state.get_global_attribute("saving_attr_skiplist_Layer")
        is not None
    )


# Functional graph: `_keras_history`, `_inbound_nodes`, `_keras_logits`


def test_functional_graph_history():
    inputs = keras.Input((4,))
    logits = keras.layers.Dense(3, name="d")(inputs)
    outputs = keras.layers.Softmax(name="s")(logits)
    model = keras.Model(inputs, outputs)
    assert_has(model.outputs[0], "`KerasTensor`", ["_keras_history"])
    assert_has(model.get_layer("s"), "`Operation`", ["_inbound_nodes"])
    operation, operands, index = compat.tensor_producer(model.outputs[0])
    assert operation is model.get_layer("s") and index == 0, changed(
        "`KerasTensor._keras_history`", f"the producer is {operation!r}"
    )
    assert compat.layer_of(operands[0]) is model.get_layer("d")
    assert compat.tensor_producer(model.inputs[0]) == (None, [], 0)
    assert isinstance(compat.layer_of(model.inputs[0]), keras.layers.InputLayer)
    assert compat.is_softmax(model.get_layer("s"))
    assert compat.is_softmax(keras.layers.Dense(2, activation="softmax"))
    assert not compat.is_softmax(model.get_layer("d"))
    softmaxed = keras.ops.softmax(logits)
    assert compat.is_softmax(compat.layer_of(softmaxed)), changed(
        "`keras.src.ops.nn.Softmax`", "`keras.ops.softmax` is another operation"
    )

    if TENSORFLOW:
        import tensorflow as tf

        found = []

        @tf.function
        def traced(values):
            probabilities = keras.activations.softmax(values)
            found.append(compat.softmax_logits(probabilities) is values)
            return probabilities

        traced(tf.ones((2, 3)))
        assert found == [True], changed(
            "`_keras_logits`", "a softmax's output does not keep its logits"
        )
