"""Adopting a classifier trained without this package.

`adopt_model` takes an ordinary Keras classifier, whose output layer is a
`keras.layers.Dense`, and returns a copy of it whose output layer is an
`ExpandableDense` with the same configuration and the same weights, so that
its predictions are unchanged and its head can grow. The compile
configuration and the optimizer's state (step counter, per-variable slots
such as Adam's moments) come along, so training continues where it stopped.
"""

import collections.abc
import os

import keras
import numpy as np

from keras_incremental import compat
from keras_incremental.layers import ExpandableDense
from keras_incremental.models.graph import graph_outputs
from keras_incremental.models.heads import find_layer
from keras_incremental.models.heads import may_follow_head
from keras_incremental.models.heads import walk_back
from keras_incremental.optimizers.nesting import optimizer_children
from keras_incremental.optimizers.slots import copy_slots
from keras_incremental.optimizers.slots import leaf_optimizers
from keras_incremental.optimizers.slots import optimizer_tree
from keras_incremental.saving.files import keras_file_path
from keras_incremental.saving.portable import portable_optimizers
from keras_incremental.utils.messages import preview


def adopt_model(source, classes, head=None):
    """Copies a plain classifier with its output `Dense` made expandable.

    The output layer of `source`, a `keras.layers.Dense`, is replaced by a
    `keras_incremental.ExpandableDense` with the same configuration (units,
    activation, bias, initializers, regularizers, constraints, dtype policy,
    name) and the same kernel and bias, to the bit. Every other layer keeps
    its configuration, name and weights, so the new model's predictions are
    those of `source`. The `Dense` may be followed by layers without weights
    that keep its width (`Softmax`, `Activation`, ...: see
    `keras_incremental.models.heads.HEAD_FOLLOWERS`), and may sit
    inside a nested Sequential or functional model (which is copied too).

    When `source` is compiled, the new model is compiled with the same loss,
    metrics and optimizer class and configuration, and the optimizer's state
    is carried over: the step counter, and the slots (such as Adam's moments)
    of every variable, the head's included. An uncompiled `source` gives an
    uncompiled model.

    `source` is never changed, and nothing is written to disk. A head that is
    already an `ExpandableDense` is accepted and copied as it is.

    Args:
        source: A built Sequential or functional `keras.Model` with one
            output, or the path (a string or `os.PathLike`) of a `.keras`
            file of such a model, as written by `model.save`. The file is
            read with `keras.saving.load_model(path, compile=True,
            safe_mode=True)`.
        classes: List, tuple or 1-D NumPy array naming the head's output
            columns in order, one hashable name per unit, no duplicates. It is
            checked, not stored.
        head: The `Dense` to replace: a layer name, a layer, or `None` for
            the `Dense` whose output (through `Softmax` or `Activation`
            layers only) is the model's output. A named layer must be that
            one. Defaults to `None`.

    Returns:
        A tuple `(model, head_name)`: the new `keras.Model` and the name of
        its `ExpandableDense` head.

    Raises:
        TypeError: for a `source` that is neither a model nor a path, a
            subclassed (not Sequential or functional) model, `classes` that
            are not a 1-D sequence of hashable names, a `head` that is not a
            name or layer, or a head that is not a `keras.layers.Dense` (a
            subclass of it included, its computation may differ).
        ValueError: for a path that is not an existing, readable `.keras`
            file, an unbuilt model, a model with more than one output, an
            output not produced by a `Dense` (layers other than `Softmax` and
            `Activation` after it), a `head` that is not that `Dense`, a
            quantized or LoRA-enabled head, duplicate class names or a number
            of them other than the head's units, or a compile configuration
            that cannot be rebuilt (unregistered custom objects).

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(3),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1)
    adopted, head = adopt_model(model, ["cat", "dog", "bird"])
    # `adopted.predict(x)` equals `model.predict(x)`; its head can grow:
    keras_incremental.expand(adopted, 2)
    ```
    """
    _check_classes(classes)
    model = _load(source)
    _check_model(model)
    layer = _find_head(model, head)
    _check_count(classes, layer)
    if model.compiled:
        _check_compile_config(model)

    try:
        adopted = _Cloner(layer).clone(model)
    except (TypeError, ValueError, NotImplementedError) as error:
        raise ValueError(
            f"Could not copy model '{model.name}' ({error}); expected a "
            "model whose layers can be rebuilt from their configuration "
            "(custom layers registered with "
            "`keras.saving.register_keras_serializable`)."
        ) from error
    _copy_variables(model, adopted)
    _carry_optimizer_state(model, adopted)
    return adopted, layer.name


class _Cloner:
    """Copies a model with `keras.models.clone_model`, `head` made an
    `ExpandableDense`, nested models copied the same way.

    Unlike `clone_model`'s own, the copy of a functional model keeps the
    names of its input layers. A layer shared by several models is copied
    once.
    """

    def __init__(self, head):
        self.head = head
        self.copies = {}

    def clone(self, model):
        input_tensors = None
        if not isinstance(model, keras.Sequential):
            input_tensors = keras.tree.map_structure(
                self._input_like, model.input
            )
        return keras.models.clone_model(
            model, input_tensors=input_tensors, clone_function=self._layer
        )

    def _layer(self, item):
        copy = self.copies.get(id(item))
        if copy is not None:
            return copy
        if item is self.head:
            copy = ExpandableDense.from_config(item.get_config())
        elif isinstance(item, keras.Model) and graph_outputs(item) is not None:
            copy = self.clone(item)
        else:
            copy = item.__class__.from_config(item.get_config())
        self.copies[id(item)] = copy
        return copy

    @staticmethod
    def _input_like(tensor):
        source = compat.layer_of(tensor)
        # Ragged inputs exist on TensorFlow only: asked for only when used.
        ragged = {"ragged": True} if getattr(tensor, "ragged", False) else {}
        return keras.Input(
            batch_shape=tensor.shape,
            dtype=tensor.dtype,
            sparse=tensor.sparse,
            name=tensor.name if source is None else source.name,
            **ragged,
        )


def _check_classes(classes):
    if isinstance(classes, np.ndarray):
        if classes.ndim != 1:
            raise ValueError(
                "Expected `classes` to be 1-D, one name per output unit of "
                f"the head. Received an array of shape {classes.shape}"
            )
        names = classes.tolist()
    elif isinstance(classes, collections.abc.Sequence) and not isinstance(
        classes, (str, bytes)
    ):
        names = list(classes)
    else:
        raise TypeError(
            "Expected `classes` to be a list, tuple or 1-D NumPy array of "
            "class names, one per output unit of the head, in column order. "
            f"Received: classes={preview(classes)} of type "
            f"{type(classes).__name__}"
        )
    try:
        counts = collections.Counter(names)
    except TypeError as error:
        raise TypeError(
            "Expected hashable class names in `classes` (such as strings or "
            f"integers). Received: classes={preview(names)}"
        ) from error
    duplicates = [name for name, count in counts.items() if count > 1]
    if duplicates:
        raise ValueError(
            f"Expected unique class names in `classes`; {preview(duplicates)} "
            "appear more than once, so their columns could not be told "
            f"apart. Received: classes={preview(names)}"
        )


def _check_count(classes, layer):
    if len(classes) != layer.units:
        raise ValueError(
            "Expected one name in `classes` per output unit of the head "
            f"'{layer.name}', which has {layer.units} units. Received "
            f"{len(classes)} names: classes={preview(classes)}"
        )


def _load(source):
    if isinstance(source, keras.Model):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "Expected `source` to be a `keras.Model` or the path of a "
            f"`.keras` file. Received: source={source!r} of type "
            f"{type(source).__name__}"
        )
    path = keras_file_path(
        source, "For another format, load the model yourself and pass it."
    )
    try:
        model = keras.saving.load_model(
            path,
            custom_objects=portable_optimizers(),
            compile=True,
            safe_mode=True,
        )
    except Exception as error:
        raise ValueError(
            f"Keras could not load '{path}' ({type(error).__name__}: "
            f"{error}); expected a `.keras` file written by `model.save` "
            "whose custom objects, if any, are registered. Received: "
            f"source='{path}'"
        ) from error
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"'{path}' holds a `{type(model).__name__}`, not a model; "
            f"expected a saved `keras.Model`. Received: source='{path}'"
        )
    return model


def _check_model(model):
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built and has no weights yet; "
            "expected a built model. Build it with `keras.Input` in the "
            "model, `model.build(input_shape)`, or by calling it on data."
        )
    outputs = graph_outputs(model)
    if outputs is None:
        raise TypeError(
            f"Model '{model.name}' is a subclassed model "
            f"(`{type(model).__name__}`); expected a Sequential or "
            "functional model, whose layers and their connections are known."
        )
    if len(outputs) != 1:
        raise ValueError(
            f"Model '{model.name}' has {len(outputs)} outputs; expected a "
            "classifier with one output."
        )


def _find_head(model, head):
    """The `Dense` whose output is the model's output, checked."""
    found = _output_dense(model)
    if head is not None:
        chosen = _named_layer(model, head)
        if chosen is not found:
            raise ValueError(
                f"Layer '{chosen.name}' does not produce the output of model "
                f"'{model.name}'; expected the output `Dense` "
                f"('{found.name}'), the only layer whose units are the "
                f"model's classes. Received: head={_describe(head)}"
            )
    if not isinstance(found, ExpandableDense) and (
        type(found) is not keras.layers.Dense
    ):
        raise TypeError(
            f"The output layer '{found.name}' is a "
            f"`{type(found).__name__}`, a subclass of `Dense`; expected a "
            "plain `keras.layers.Dense`, whose computation `ExpandableDense` "
            "is known to reproduce."
        )
    if found.quantization_mode is not None:
        raise ValueError(
            f"The output layer '{found.name}' is quantized "
            f"(quantization_mode='{found.quantization_mode}'); expected an "
            "unquantized `Dense`. Adopt the unquantized model, then quantize."
        )
    if found.lora_enabled:
        raise ValueError(
            f"The output layer '{found.name}' has LoRA enabled (lora_rank="
            f"{found.lora_rank}); expected a `Dense` without LoRA. Merge or "
            "drop the LoRA weights before adopting the model."
        )
    return found


def _output_dense(model):
    """Walks back from the model's output to the `Dense` that makes it."""

    def enter(layer):
        if not isinstance(layer, keras.Model):
            return False
        inner = graph_outputs(layer)
        if inner is None or len(inner) != 1:
            raise ValueError(
                f"The output of model '{model.name}' comes from nested "
                f"model '{layer.name}', which is not a Sequential or "
                "functional model with one output; expected the output "
                "to come from a `Dense` layer."
            )
        return True

    followers = []
    for step in walk_back(model, enter):
        layer = step.operation
        if layer is None:
            break
        if isinstance(layer, keras.layers.Dense):
            return layer
        if may_follow_head(layer) and len(step.inputs) == 1:
            followers.append(layer)
            continue
        after = ""
        if followers:
            names = [item.name for item in reversed(followers)]
            after = f" (then {', '.join(names)})"
        raise ValueError(
            f"The output of model '{model.name}' comes from layer "
            f"'{layer.name}'{after}, a `{type(layer).__name__}`; expected a "
            "`keras.layers.Dense` output layer, followed by nothing but "
            "layers without weights that keep the width (such as `Softmax` "
            "or `Activation`). Received a model with layers: "
            f"{preview([item.name for item in model.layers])}"
        )
    raise ValueError(
        f"Could not find the layer that produces the output of "
        f"model '{model.name}'; expected a Sequential or functional "
        "model whose output comes from a `Dense` layer."
    )


def _named_layer(model, head):
    chosen = find_layer(model, head, "head")
    if not isinstance(chosen, keras.layers.Dense):
        raise TypeError(
            f"Layer '{chosen.name}' is a `{type(chosen).__name__}`; expected "
            "the model's output `keras.layers.Dense`. Received: "
            f"head={_describe(head)}"
        )
    return chosen


def _check_compile_config(model):
    """Raises, before anything is built, if `compile` cannot be replayed."""
    try:
        config = model.get_compile_config()
        keras.saving.deserialize_keras_object(config)
    except Exception as error:
        raise ValueError(
            f"Model '{model.name}' is compiled with objects whose "
            f"configuration cannot be rebuilt ({type(error).__name__}: "
            f"{error}); expected a loss, metrics and optimizer that Keras "
            "can serialize. Register custom ones with "
            "`keras.saving.register_keras_serializable` and use named "
            "functions rather than lambdas, or compile the model with such "
            "objects before adopting it."
        ) from error


def _copy_variables(source, adopted):
    """Copies every variable of `source` into `adopted`, by position."""
    pairs = _variable_pairs(source, adopted)
    for old, new in pairs:
        new.assign(_numpy(old))


def _variable_pairs(source, adopted):
    """`source`'s variables with their counterparts in the copy.

    The copy has the same layers in the same order (the head's kernel and
    bias keep their names), so the variables pair by position; names and
    shapes are checked all the same.
    """
    old_variables = list(source.variables)
    new_variables = list(adopted.variables)
    if len(old_variables) != len(new_variables) or any(
        old.name != new.name or tuple(old.shape) != tuple(new.shape)
        for old, new in zip(old_variables, new_variables, strict=True)
    ):
        raise ValueError(
            f"The copy of model '{source.name}' does not have the same "
            "variables as the model; expected a model whose layers rebuild "
            "their variables from their configuration. Received variables "
            f"{preview([v.name for v in old_variables])}, copied as "
            f"{preview([v.name for v in new_variables])}"
        )
    return list(zip(old_variables, new_variables, strict=True))


def _carry_optimizer_state(source, adopted):
    """Copies the optimizer state of `source` into the copy's optimizer.

    `clone_model` compiled the copy with an optimizer of the same class and
    configuration (and built it). Per-variable slots are matched through the
    model variables they belong to, whatever the order in which either
    optimizer was built; other optimizer variables (step counters, learning
    rate, loss scale) by name.
    """
    old = getattr(source, "optimizer", None)
    new = getattr(adopted, "optimizer", None)
    if old is None or new is None or not old.built:
        return
    if not new.built:
        new.build(adopted.trainable_variables)
    old_tree = list(optimizer_tree(old))
    new_tree = list(optimizer_tree(new))
    if [type(o) for o in old_tree] != [type(o) for o in new_tree]:
        # One side wraps its optimizer in a loss scaler and the other does
        # not (the global dtype policy changed in between): pair the
        # optimizers that hold the slots.
        old_tree = leaf_optimizers(old)
        new_tree = leaf_optimizers(new)
    if [type(o) for o in old_tree] != [type(o) for o in new_tree]:
        raise ValueError(
            f"The optimizer of the copy of model '{source.name}' differs "
            f"from the model's ({[type(o).__name__ for o in new_tree]} for "
            f"{[type(o).__name__ for o in old_tree]}); expected the same."
        )
    pairs = _variable_pairs(source, adopted)
    for old_opt, new_opt in zip(old_tree, new_tree, strict=True):
        if old_opt.built and new_opt.built:
            _copy_optimizer(old_opt, new_opt, pairs)


def _copy_optimizer(old, new, pairs):
    copy_slots(old, new, pairs)
    old_lists = dict(compat.optimizer_slot_lists(old))
    new_lists = compat.optimizer_slot_lists(new)
    # The optimizer's own variables (`iteration`, `learning_rate`, a loss
    # scale and its counter), by name: slots are named after paths, which
    # differ between the copies, and were copied above.
    old_own = _own_variables(old, old_lists.values())
    new_own = _own_variables(new, [slots for _, slots in new_lists])
    for name, variable in new_own.items():
        value = old_own.get(name)
        if value is not None and tuple(value.shape) == tuple(variable.shape):
            variable.assign(_numpy(value))


def _own_variables(optimizer, slot_lists):
    """`optimizer`'s variables that are neither slots nor those of the
    optimizers it wraps, by name (names held by several are left out)."""
    skipped = {id(slot) for slots in slot_lists for slot in slots}
    for child in optimizer_children(optimizer):
        skipped.update(id(v) for v in child.variables)
    counts = collections.Counter()
    named = {}
    for variable in optimizer.variables:
        if id(variable) in skipped:
            continue
        counts[variable.name] += 1
        named[variable.name] = variable
    return {name: v for name, v in named.items() if counts[name] == 1}


def _numpy(variable):
    """A copy of `variable`'s value, as a NumPy array."""
    return np.array(keras.ops.convert_to_numpy(variable.value))


def _describe(head):
    if isinstance(head, keras.layers.Layer):
        return f"<{type(head).__name__} name={head.name}>"
    return repr(head)
