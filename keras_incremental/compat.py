"""The one place that touches Keras internals.

Growing a built layer and carrying an optimizer's state over to new variables
needs a few private attributes of Keras objects (variable trackers, the
optimizer's variable index, TensorFlow distribution strategies). They are all
reached through the functions here, so that a change in Keras breaks one
module, and the tests that cover it, rather than the whole package.

The functions are grouped by the internal they touch, one section each;
`tests/test_compat.py` has a test per section that exercises the internal
directly and names it when it fails. Nothing else in the package reaches a
private attribute of a Keras object (`tests/test_style.py` checks it).
"""

import contextlib
import functools
import inspect

import keras
import numpy as np

# Layers' tracker: `_tracker` (locked once built, `untrack`, its stores)


@contextlib.contextmanager
def unlocked_tracker(obj):
    """Lets a built layer, metric or optimizer track new variables.

    Built Keras objects lock their variable tracker; `Dense.enable_lora` opens
    it the same way to add weights to a built layer.
    """
    tracker = obj._tracker
    was_locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def tracked_as_trainable(layer, variable):
    """Whether `layer` tracks `variable` among its trainable variables.

    That is the variable's kind, fixed when it was added; its `trainable`
    flag is only the layer's current state (`False` while it is frozen).
    """
    return any(v is variable for v in layer._trainable_variables)


def untrack_variable(obj, variable):
    """Removes `variable` from `obj`'s variable tracker."""
    with unlocked_tracker(obj):
        obj._tracker.untrack(variable)


def detach_tracked(obj, name):
    """Removes the tracked attribute `name` of `obj` (set with
    `setattr` under `unlocked_tracker`), from the tracker too (a plain
    `delattr` leaves it in the layer's lists)."""
    value = obj.__dict__.get(name)
    if value is None:
        return
    with unlocked_tracker(obj):
        obj._tracker.untrack(value)
    del obj.__dict__[name]


def layer_variables_state(layer):
    """What `restore_layer_variables` needs to put back the variables of
    `layer` as they are now: its lists of tracked variables, in order, and
    the attributes that hold variables (`Dense._kernel`, `bias`)."""
    tracker = layer._tracker
    stores = {
        name: list(tracker.config[name][1])
        for name in ("trainable_variables", "non_trainable_variables")
        if name in tracker.config
    }
    attributes = {
        name: value
        for name, value in vars(layer).items()
        if isinstance(value, keras.Variable)
    }
    return stores, attributes


def restore_layer_variables(layer, state):
    """Gives `layer` back the variables it had when `state` was taken
    (`layer_variables_state`), after a growth that replaced some of them
    failed half way."""
    stores, attributes = state
    tracker = layer._tracker
    with unlocked_tracker(layer):
        for name, variable in attributes.items():
            if vars(layer).get(name) is not variable:
                # Through `__setattr__`, which also updates the TensorFlow
                # checkpoint dependencies.
                setattr(layer, name, variable)
        for name, variables in stores.items():
            _set_list_contents(tracker.config[name][1], variables)
            ids = tracker.stored_ids[name]
            ids.clear()
            ids.update(id(variable) for variable in variables)


# TensorFlow's tracked lists: `ListWrapper._storage`, `_update_snapshot`


def _set_list_item(items, index, value):
    """`items[index] = value`, also in TensorFlow's list wrapper.

    TensorFlow wraps an object's lists in a `ListWrapper` whose `__setitem__`
    compares the old and new contents with `==`, which Keras variables of
    different shapes do not support; it also marks the list as unsaveable.
    A grown variable takes the place, name and role of the one it replaces,
    so the wrapper's storage is updated directly.
    """
    storage = getattr(items, "_storage", None)
    if storage is None:
        items[index] = value
        return
    storage[index] = value
    items._update_snapshot()


def _set_list_contents(items, values):
    """`items[:] = values`, also in TensorFlow's list wrapper (see
    `_set_list_item`)."""
    storage = getattr(items, "_storage", None)
    if storage is None:
        items[:] = values
        return
    storage[:] = values
    items._update_snapshot()


# Dense layers: `Dense._kernel`, `Layer._not_implemented_error`


def dense_kernel(layer):
    """The kernel variable that a built `Dense` `layer` stores
    (`Dense._kernel`).

    `Dense.kernel` is the kernel the layer computes with: with LoRA, the
    stored kernel plus its low-rank update, which is no variable. Growth
    reads, resizes and replaces the stored one.
    """
    return layer._kernel


def set_dense_kernel(layer, variable):
    """Makes `variable` the kernel that the `Dense` `layer` stores
    (`Dense._kernel`) and computes with, set through the layer's
    `__setattr__` as `Dense.build` sets it (inside `unlocked_tracker` for a
    built layer)."""
    layer._kernel = variable


def not_implemented_error(layer, attribute):
    """The error a Keras layer raises for a method or attribute that a
    subclass does not implement (`Layer._not_implemented_error`)."""
    return layer._not_implemented_error(attribute)


# Variables: `_value`, `_shape`, `_validate_shape`; TensorFlow's
# `_distribute_strategy`


def variable_scope_of(variable):
    """The context in which variables like `variable` must be created.

    Under `tf.distribute`, a callback runs outside the strategy's scope, and a
    variable made there would live on one device only while its peers are
    mirrored: the replicas would then silently diverge.
    """
    if keras.backend.backend() == "tensorflow":
        strategy = getattr(variable.value, "_distribute_strategy", None)
        if strategy is not None:
            return strategy.scope()
    return contextlib.nullcontext()


def growable(variable):
    """Whether `variable` can take a wider value in place (`grow_variable`)."""
    value = getattr(variable, "_value", None)
    shape = getattr(value, "shape", None)
    return (
        keras.backend.backend() == "tensorflow"
        and shape is not None
        and shape.rank is not None
        and shape.rank > 0
        and shape[-1] is None
    )


def grow_variable(variable, value):
    """Gives `variable` a `value` that differs in its last dimension, in place.

    The Keras variable object stays the same (its path, its place in layers,
    optimizers and savers); on TensorFlow it is backed from then on by a
    variable whose last dimension is free. TensorFlow traces a function
    against the static shapes of the variables it reads; with that dimension
    left free, a function traced before the growth stays valid after it, so
    growing a head does not cost a retrace. The first call on a variable
    replaces its backing variable; later ones only assign.

    Args:
        variable: A `keras.Variable`.
        value: A NumPy array, the new value.

    Returns:
        Whether the variable was grown: `False` on backends other than
        TensorFlow, where variables are replaced instead.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    backing = variable._value
    if not growable(variable):
        variable._value = _growable_tf_variable(backing, value)
    else:
        _assign_any_shape(backing, value)
    variable._shape = variable._validate_shape(value.shape)
    return True


def _assign_any_shape(backing, value):
    """Assigns `value` to TensorFlow variable `backing`, whose last
    dimension is free."""
    if _is_plain_tf_variable(backing):
        # The raw op: `assign`'s checks and read-back cost several times
        # the assignment itself, which is what growth is made of.
        import tensorflow as tf

        tf.raw_ops.AssignVariableOp(
            resource=backing.handle,
            value=np.asarray(value, backing.dtype.as_numpy_dtype),
        )
    else:  # Distributed: every replica takes the value.
        backing.assign(value, read_value=False)


def variable_state(variable):
    """What `restore_variable` needs to put `variable` back as it is now.

    Taken before a growth that may fail half way: its backend variable, its
    shape and its value (read cheaply, see `variable_numpy`).
    """
    return (variable._value, variable._shape, variable_numpy(variable))


def restore_variable(variable, state):
    """Puts `variable` back as it was when `state` was taken
    (`variable_state`): the same backend variable (so that traced functions
    holding it stay valid), shape and value.

    A growth either gives a variable a new backend variable, leaving the old
    one as it was, or assigns to it in place (a growable one on
    TensorFlow, or any within a head's spare capacity); the latter needs its
    value written back (PyTorch assigns into the same tensor).
    """
    backing, shape, value = state
    variable._value = backing
    variable._shape = shape
    if keras.backend.backend() == "tensorflow" and growable(variable):
        _assign_any_shape(backing, value)
    elif tuple(shape) == value.shape:
        variable.assign(value)


def variable_numpy(variable):
    """The value of a Keras `variable` as a NumPy array, read cheaply.

    On TensorFlow the array is a read-only view of a snapshot of the value
    (later updates of the variable do not reach it): `numpy()` would copy it
    once more.
    """
    backing = getattr(variable, "_value", None)
    if keras.backend.backend() == "tensorflow" and _is_plain_tf_variable(
        backing
    ):
        import tensorflow as tf

        value = tf.raw_ops.ReadVariableOp(
            resource=backing.handle, dtype=backing.dtype
        )._numpy()
        value.flags.writeable = False
        return value
    return variable.numpy()


def _is_plain_tf_variable(value):
    import tensorflow as tf

    # Not a distributed (mirrored, ...) variable, whose handle is one
    # replica's only.
    return (
        isinstance(value, tf.Variable)
        and getattr(value, "_distribute_strategy", None) is None
    )


def make_growable(variable):
    """Backs `variable` by a TensorFlow variable with a free last dimension.

    Returns:
        Whether it is now growable (always `False` off TensorFlow).
    """
    if growable(variable):
        return True
    if keras.backend.backend() != "tensorflow":
        return False
    return grow_variable(variable, variable._value.read_value())


def _growable_tf_variable(old, value):
    import tensorflow as tf

    strategy = getattr(old, "_distribute_strategy", None)
    scope = contextlib.ExitStack()
    scope.enter_context(tf.init_scope())
    if strategy is not None:
        # Mirrored like the variable it replaces, on the same devices.
        scope.enter_context(strategy.scope())
        scope.enter_context(strategy.extended.colocate_vars_with(old))
    with scope:
        shape = tf.TensorShape(old.shape[:-1]).concatenate([None])
        return tf.Variable(
            tf.cast(value, old.dtype),
            shape=shape,
            trainable=old.trainable,
            name=_short_name(old),
            aggregation=old.aggregation,
            synchronization=old.synchronization,
        )


def _short_name(tf_variable):
    """A TensorFlow variable's own name, without scopes and output index."""
    return tf_variable.name.split(":")[0].rpartition("/")[2]


@contextlib.contextmanager
def fixed_shapes(variables):
    """Backs growable `variables` by fixed-shape copies for a while.

    A SavedModel records each variable's shape, and Keras's `TFSMLayer`
    refuses to load one with a free dimension; an export inside this context
    records the shapes the variables have now. The growable variables are
    put back afterwards (nothing trains in between, so their values hold).
    """
    swapped = []
    try:
        for variable in variables:
            if not growable(variable):
                continue
            import tensorflow as tf

            backing = variable._value
            with tf.init_scope():
                fixed = tf.Variable(
                    backing.read_value(),
                    trainable=backing.trainable,
                    name=_short_name(backing),
                )
            variable._value = fixed
            swapped.append((variable, backing))
        yield
    finally:
        for variable, backing in swapped:
            variable._value = backing


def backend_variable_ids(variables):
    """Identities of what a traced function holds of Keras `variables`.

    When one of them changed, the function must be traced again. TensorFlow
    traces capture the backend variables behind them. A compiled JAX step
    takes the Keras variables' values as arguments (their backend arrays
    change at every assignment); it holds the variable objects, in their
    order, and compiles again by itself for new shapes. (A function kept
    for reuse keeps the objects it captured alive, so their identities
    cannot be taken over by new objects while it is kept.)
    """
    if keras.backend.backend() == "jax":
        return tuple(id(v) for v in variables)
    return tuple(id(getattr(v, "_value", v)) for v in variables)


# Shape inference: `keras.src.backend.common.symbolic_scope`


def state_width(outputs, units, free=False):
    """States the last dimension of a growable head's `outputs`.

    A growable head's variables have a free last dimension, and so have its
    outputs in traced functions. Keras's shape inference
    (`compute_output_spec`, which picks losses and metrics when the model is
    first built) always gets `units`; traced functions get it unless `free`,
    as some metrics size their state from it (`F1Score`). A function traced
    with the width stated is only valid for that width.
    """
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope

    if keras.backend.backend() != "tensorflow" or outputs.shape[-1] is not None:
        return outputs
    if not free or in_symbolic_scope():
        outputs.set_shape(outputs.shape[:-1].concatenate([units]))
    return outputs


def in_shape_inference():
    """Whether layers are being called for shapes only
    (`backend.compute_output_spec`, which `fit` uses to build the compiled
    metrics and loss on JAX and PyTorch): what they compute is never run."""
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope

    return in_symbolic_scope()


# Optimizers: `_var_key`, `_trainable_variables`, `_variables`, `_tracker`,
# `_trainable_variables_indices`, the slot lists, `_iterations`,
# `_learning_rate`, `_track_variable`, `_optimizer_map`,
# `_distribution_strategy`


def optimizer_knows(optimizer, variable):
    """Whether the built `optimizer` updates `variable`."""
    return (
        optimizer._var_key(variable) in optimizer._trainable_variables_indices
    )


def optimizer_variable_count(optimizer):
    """How many variables the built `optimizer` updates."""
    return len(optimizer._trainable_variables)


def optimizer_variable_index(optimizer, variable):
    """The index of `variable` among those the built `optimizer` updates."""
    return optimizer._trainable_variables_indices[optimizer._var_key(variable)]


def optimizer_slot_lists(optimizer):
    """The per-variable slot lists of a built `optimizer`, by attribute name.

    Keras optimizers keep each kind of slot in a list aligned with the
    variables they update (`Adam._momentums`, `SGD.momentums`, the EMA's
    `_model_variables_moving_average`, ...). They are found by that alignment
    rather than by slot names, which differ between an optimizer built by
    `fit` and one built by `load_model`.
    """
    count = len(optimizer._trainable_variables)
    skipped = (id(optimizer._variables), id(optimizer._trainable_variables))
    lists = []
    for name, value in vars(optimizer).items():
        if not isinstance(value, list) or id(value) in skipped:
            continue
        if len(value) != count or not value:
            continue
        if all(
            item is None or isinstance(item, keras.Variable) for item in value
        ):
            lists.append((name, value))
    return lists


def new_optimizer_variable(optimizer, reference, like, value):
    """Makes an untracked optimizer variable named as `like`, holding `value`.

    It gets the name and path of `like` (the path of a loss-scaled optimizer's
    inner slot depends on how it was built) and, on TensorFlow, lives on the
    devices of the model variable `reference`, as `add_variable_from_reference`
    would; the caller puts it in the place of `like`, so that the save order
    stays that of a fresh `build`.
    """
    with variable_scope_of(reference), _colocated_with(optimizer, reference):
        with _parent_scope_of(like):
            return keras.Variable(
                initializer=value,
                dtype=like.dtype,
                trainable=False,
                aggregation=like.aggregation,
                name=like.name,
            )


def _parent_scope_of(variable):
    parent = variable.path.rpartition("/")[0]
    if not parent:
        return contextlib.nullcontext()
    outer, _, last = parent.rpartition("/")
    return keras.name_scope(last, override_parent=outer)


def _colocated_with(optimizer, reference):
    strategy = getattr(optimizer, "_distribution_strategy", None)
    if strategy is None:
        return contextlib.nullcontext()
    return strategy.extended.colocate_vars_with(reference.value)


def replace_optimizer_variable(optimizer, old, new):
    """Puts optimizer variable `new` in the place of `old`, wherever held.

    Optimizers keep their slots both in their tracked variable list (the save
    order) and in per-kind lists such as Adam's `_momentums`.
    """
    tracker = optimizer._tracker
    store = optimizer._variables
    for i, variable in enumerate(store):
        if variable is old:
            _set_list_item(store, i, new)
            tracker.stored_ids["variables"].discard(id(old))
            tracker.stored_ids["variables"].add(id(new))
    for value in vars(optimizer).values():
        if isinstance(value, list) and value is not store:
            for i, item in enumerate(value):
                if item is old:
                    _set_list_item(value, i, new)


def fresh_slot_values(optimizer, variables, values, kinds):
    """The values an optimizer like `optimizer` starts the slots of
    variables holding `values` with.

    Most optimizers start a slot at zero, some at the variable's value
    (`ScheduleFreeAdamW`'s `momentum`); rather than a list of which, a new
    optimizer of `optimizer`'s class and config is built on temporary
    variables named as `variables` and holding `values` (the new units of a
    growing head only, so the cost follows the head), and its slots are
    read.

    Args:
        optimizer: A built optimizer.
        variables: The model variables the values are for (their names and
            dtypes are used).
        values: One NumPy array per variable.
        kinds: Names of the slot lists to read (see
            `optimizer_slot_lists`).

    Returns:
        `{kind: [array or None, one per variable]}` for each kind the new
        optimizer has, or `None` when an optimizer cannot be made from
        `optimizer`'s config or built (a custom optimizer whose `get_config`
        misses an argument).
    """
    try:
        fresh = type(optimizer).from_config(optimizer.get_config())
        temporaries = [
            keras.Variable(
                initializer=np.asarray(value),
                dtype=variable.dtype,
                trainable=True,
                name=variable.name,
            )
            for variable, value in zip(variables, values, strict=True)
        ]
        fresh.build(temporaries)
    except Exception:  # Any failure of another's code: no fresh values.
        return None
    found = {}
    for kind in kinds:
        slots = vars(fresh).get(kind)
        if isinstance(slots, (list, tuple)) and len(slots) == len(values):
            found[kind] = [
                None if slot is None else np.array(variable_numpy(slot))
                for slot in slots
            ]
    return found


def replace_trainable_variable(optimizer, old, new):
    """Makes `optimizer` update `new` where it updated `old`, same index."""
    key = optimizer._var_key(old)
    # `del`, not `pop`: TensorFlow's dict wrapper does not see a `pop`, and
    # marks the optimizer (and so `model.export`) unsaveable.
    indices = optimizer._trainable_variables_indices
    index = indices[key]
    del indices[key]
    indices[optimizer._var_key(new)] = index
    trainable = optimizer._trainable_variables
    if isinstance(trainable, tuple):
        # `LossScaleOptimizer` keeps a tuple; set it as `build` does, without
        # the trackers (they would count model variables as optimizer ones).
        object.__setattr__(
            optimizer,
            "_trainable_variables",
            tuple(new if v is old else v for v in trainable),
        )
    else:
        for i, variable in enumerate(trainable):
            if variable is old:
                _set_list_item(trainable, i, new)
    to_optimizer = getattr(optimizer, "_var_to_optimizer_idx", None)
    if to_optimizer is not None and key in to_optimizer:
        to_optimizer[optimizer._var_key(new)] = to_optimizer[key]
        del to_optimizer[key]
    cache = getattr(optimizer, "_exclude_from_weight_decay_cache", None)
    if cache is not None and key in cache:
        del cache[key]


def set_optimizer_iterations(optimizer, value):
    """Sets the step counter of `optimizer` (its raw one, not scaled)."""
    optimizer._iterations.assign(value)


def stored_learning_rate(optimizer):
    """The learning rate as `optimizer` stores it (`_learning_rate`): a
    `keras.Variable` for a constant rate, else the schedule or callable that
    its `learning_rate` property computes the rate from at each step."""
    return optimizer._learning_rate


def track_optimizer_variable(optimizer, variable):
    """Adds `variable` to the variables `optimizer` saves and loads
    (`_track_variable`), as Keras adds its own (`iterations`)."""
    optimizer._track_variable(variable)


def multi_optimizer_map(optimizer):
    """The `OptimizerMap` (or callable) that a `MultiOptimizer` was made
    with (`_optimizer_map`)."""
    return optimizer._optimizer_map


# Compile state: `_compile_metrics`, `_compile_loss`, `_compile_config`


def compiled_metrics(model):
    """The metric objects that `compile` made for `model`, built ones only."""
    compile_metrics = getattr(model, "_compile_metrics", None)
    if compile_metrics is None or not compile_metrics.built:
        return []
    return list(compile_metrics.metrics)


def compile_identity(model):
    """What `compile` set that a traced train step depends on: the
    optimizer, loss and metric objects, `steps_per_execution`, `jit_compile`.
    """
    return (
        id(model.optimizer),
        id(getattr(model, "_compile_loss", None)),
        id(getattr(model, "_compile_metrics", None)),
        getattr(model, "steps_per_execution", 1),
        getattr(model, "jit_compile", None),
    )


def compiled_metrics_allow_free_width(model):
    """Whether `compile`'s metrics work with a head of free width.

    Built metrics do (those that size themselves are sized beforehand).
    Unbuilt ones are built inside the first traced step, and some size
    their state from the width seen there (`F1Score`); they are trusted only
    when each is a mean of per-sample values (`accuracy` and the like).
    """
    compile_metrics = getattr(model, "_compile_metrics", None)
    if compile_metrics is None or compile_metrics.built:
        return True
    specs = keras.tree.flatten(
        [compile_metrics._user_metrics, compile_metrics._user_weighted_metrics]
    )
    return all(_mean_of_samples(spec) for spec in specs if spec is not None)


def _mean_of_samples(spec):
    if isinstance(spec, str):
        if spec in ("accuracy", "acc", "crossentropy", "ce"):
            return True
        try:
            spec = keras.metrics.get(spec)
        except ValueError:
            return False
    wrapper = keras.metrics.MeanMetricWrapper
    if isinstance(spec, type):
        return issubclass(spec, wrapper)
    return isinstance(spec, wrapper) or (
        callable(spec) and not isinstance(spec, keras.metrics.Metric)
    )


def set_model_optimizer(model, optimizer):
    """Makes `optimizer` the model's optimizer, also for `model.save`.

    `model.save` serializes the optimizer captured by `compile`, not
    `model.optimizer`; `load_model` would otherwise rebuild the old optimizer
    and silently drop the saved state.
    """
    model.optimizer = optimizer
    config = getattr(model, "_compile_config", None)
    if config is not None:
        config.config["optimizer"] = optimizer


# Metrics: `Metric._built`, `_tracker`


def reset_lazily_built_metric(metric):
    """Drops the state of a metric that sizes its variables on first use.

    `FBetaScore` (and so `F1Score`) makes per-class variables from the width of
    the first predictions it sees; after growth they must be made again.
    """
    with unlocked_tracker(metric):
        for variable in list(metric.variables):
            metric._tracker.untrack(variable)
    metric._built = False


# Trainer functions: the cached `*_function`s, the JAX trainer's
# `jax.jit(self.*_step)`


def remake_compiled_functions(model):
    """Has the model's cached train/test/predict functions remade.

    TensorFlow and JAX bake shapes and Python values into the trace; a stale
    predict function would return the old width. Each cached function is
    replaced by one that remakes it (`make_*_function(force=True)`) on its
    first call and runs the new one: `fit` reads `model.train_function` on
    every step, so the attribute must stay callable (growth may happen inside
    a callback), and, as with `compile`, nothing is made until it is used;
    except on JAX under a `keras.distribution`, where they are made at once
    (see `_make_reads_variables`).
    """
    eager = _make_reads_variables()
    for kind in ("train", "test", "predict"):
        if getattr(model, f"{kind}_function", None) is not None:
            if eager:
                make_function(model, kind)
            else:
                setattr(model, f"{kind}_function", _RemadeOnCall(model, kind))


def make_function(model, kind):
    """`model.make_{kind}_function(force=True)`, traced anew on JAX.

    Keras's JAX trainer compiles `jax.jit(self.train_step)` (and
    `test_step`): a bound method, which equals every other bound method of
    the same function and instance. JAX keeps the traces of a function
    while it lives, keyed by that equality and the argument shapes; while a
    function made before is kept (a stage's functions, kept for the next
    stage), a new one of the same shapes would get its trace, with the
    Python values read when it was traced (a head's width, a strategy's
    settings). A new function object in the instance's `*_step` for each
    make keeps their traces apart.
    """
    if keras.backend.backend() == "jax" and kind in ("train", "test"):
        step = f"{kind}_step"
        fresh = functools.partial(getattr(type(model), step), model)
        fresh._keras_incremental_step = True
        current = vars(model).get(step)
        if current is None or getattr(
            current, "_keras_incremental_step", False
        ):
            setattr(model, step, fresh)
    return getattr(model, f"make_{kind}_function")(force=True)


def _make_reads_variables():
    """Whether `make_*_function` reads the variables' values.

    On JAX under a `keras.distribution`, it reads every state variable's
    sharding; `fit`, `evaluate` and `predict` take the values out of the
    variables (`_purge_model_variables`) before the first call, so a
    function made on that call would find none. JAX's `make_*_function`
    only wraps the step in `jax.jit` (tracing waits for the first call), so
    making it at once costs nothing.
    """
    return (
        keras.backend.backend() == "jax"
        and keras.distribution.distribution() is not None
    )


class _RemadeOnCall:
    """Stands for a stale compiled function until it is used: a call, or an
    attribute (`get_concrete_function`, ...), remakes it first."""

    def __init__(self, model, kind):
        self.model = model
        self.kind = kind

    def __call__(self, *args, **kwargs):
        return self._remade()(*args, **kwargs)

    def __getattr__(self, name):
        if name in ("model", "kind") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._remade(), name)

    def _remade(self):
        attribute = f"{self.kind}_function"
        made = make_function(self.model, self.kind)
        function = getattr(self.model, attribute)
        if function is self:
            # A `make_*_function` override that returns the function
            # instead of setting it.
            if not callable(made):
                raise TypeError(
                    f"`model.make_{attribute}(force=True)` set no new "
                    f"`model.{attribute}`; expected it to set one, as Keras's "
                    f"does. Received: {made!r}"
                )
            setattr(self.model, attribute, made)
            function = made
        return function


# Callbacks: `CallbackList` calling each callback's `on_train_begin`


def run_after_train_end(callback, finish):
    """Has `finish()` run once every callback of the running `fit` ended.

    Called from `callback.on_train_begin`. Keras calls the callbacks'
    `on_train_end` in list order, and one listed after `callback` may still
    set the model's weights there (`EarlyStopping(restore_best_weights=
    True)`). Keras gives a callback no handle on its `CallbackList`, so it is
    found as the caller of `on_train_begin`, and its `on_train_end` is
    wrapped on that instance, which lives for one `fit` only.

    Returns:
        `True` when `finish` will run after the callbacks' `on_train_end`;
        `False` when `on_train_begin` was not called by a `CallbackList`
        holding `callback` (called by hand): the caller then finishes in its
        own `on_train_end`.
    """
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back
        callbacks = caller.f_locals.get("self") if caller else None
    finally:
        del frame
    if not isinstance(callbacks, keras.callbacks.CallbackList) or not any(
        item is callback for item in callbacks.callbacks
    ):
        return False
    end = callbacks.on_train_end
    wrapped_before = "on_train_end" in vars(callbacks)

    def on_train_end(logs=None):
        # A `CallbackList` the user made and passes again to the next `fit`
        # gets its own `on_train_end` back.
        if wrapped_before:
            callbacks.on_train_end = end
        else:
            del callbacks.on_train_end
        end(logs)
        finish()

    callbacks.on_train_end = on_train_end
    return True


# Saving: `saving_lib.get_attr_skipset`, `global_state`

# The kinds of objects `model.save` and `load_model` walk
# (`KerasSaveable._obj_type()`), each with its set of attributes to skip.
_SAVEABLE_KINDS = (
    "Operation",
    "Layer",
    "Functional",
    "Sequential",
    "Metric",
    "Optimizer",
    "Loss",
)


def cache_saving_skipsets():
    """Has `model.save` and `load_model` stop leaking native memory.

    For each object they walk, Keras 3.15's saving code asks
    `saving_lib.get_attr_skipset` which attributes to skip. That function
    stores its answer in Keras's global state under one key
    (`saving_attr_skipset_<kind>`) and looks it up under another
    (`saving_attr_skiplist_<kind>`), so it never finds it and makes its
    reference objects again on every call, an `Optimizer` among them. The
    optimizer's two variables are named after a new optimizer
    (`optimizer_<n>/iteration`), and on TensorFlow each variable made under
    a new name adds an entry to the eager kernel cache (`VarHandleOp`
    carries the name) that is never freed: about 70 KB of native memory per
    save or load, 13 MB over 200 checkpointed stages. This stores the sets
    under the key that is read. Keras's global state is per thread: call it
    right before saving. With a Keras that reads the key it writes, it
    changes nothing.

    Returns:
        Whether the sets are now where Keras reads them: `False` when this
        Keras has another layout (a test then fails, so that the leak is
        looked at again, rather than coming back silently).
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:  # Another Keras layout: nothing to work around.
        return False
    for kind in _SAVEABLE_KINDS:
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is not None:
            continue
        try:
            skipset = saving_lib.get_attr_skipset(kind)
        except (AttributeError, ValueError):  # A kind this Keras lacks.
            continue
        global_state.set_global_attribute(key, skipset)
    return (
        global_state.get_global_attribute("saving_attr_skiplist_Layer")
        is not None
    )


# Functional graph: `_keras_history`, `_inbound_nodes`, `_keras_logits`,
# `keras.src.ops.nn.Softmax`


def tensor_producer(tensor):
    """The call of a layer (or `keras.ops` operation) that made `tensor`.

    Reads the Keras history of a symbolic tensor of a functional model: the
    operation that made it and the node of that call.

    Args:
        tensor: A `KerasTensor` of a functional model.

    Returns:
        `(operation, inputs, index)`: the layer or operation, the symbolic
        tensors it was called on, and which of its outputs `tensor` is; or
        `(None, [], 0)` for a model input.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, [], 0
    operation = history.operation
    node = operation._inbound_nodes[history.node_index]
    if node.is_input:
        return None, [], 0
    return operation, list(node.input_tensors), history.tensor_index


def layer_of(tensor):
    """The layer that made a symbolic `tensor` (an `InputLayer` for a model
    input), or `None` for a tensor outside a model's graph."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def softmax_logits(outputs):
    """The logits a softmax was given, where Keras keeps them on its output
    tensor (as its cross-entropy reads them), else `None`."""
    return getattr(outputs, "_keras_logits", None)


def is_softmax(operation):
    """Whether a layer or `keras.ops` operation of a model's graph computes
    a softmax: a `Softmax` layer, a layer whose `activation` is softmax
    (`Dense`, `Activation`), or `keras.ops.softmax`."""
    from keras.src.ops.nn import Softmax

    if isinstance(operation, (keras.layers.Softmax, Softmax)):
        return True
    return getattr(operation, "activation", None) is keras.activations.softmax
