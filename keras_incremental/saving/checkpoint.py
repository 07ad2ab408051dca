"""Stage checkpoints: one `.keras` file with the run's state inside.

A checkpoint is an ordinary `.keras` file (`keras.models.load_model` opens it)
with more entries in its zip: `keras_incremental/state.json` (class names,
stage number, settings: a `RunState`, see `run_state`),
`keras_incremental/memory.h5` (the exemplar memory) and
`keras_incremental/strategy.h5` (what the strategy learned), through h5py.
It is written to a temporary file in the same folder and moved into place
with `os.replace`, so a crash at any moment leaves the previous checkpoint
whole.

A checkpoint may come from someone else: `read_checkpoint` reads it as
untrusted data (`safe_read`): sizes are bounded before anything is read, the
state is checked key by key, the model is loaded with Keras's `safe_mode`,
and the parts are checked against each other (class count and head width,
exemplar labels, shapes and values) before anything is returned.
"""

import io
import json
import math
import os
import zipfile

import h5py
import keras
import numpy as np

from keras_incremental import compat
from keras_incremental.models.heads import find_head
from keras_incremental.saving import safe_read
from keras_incremental.saving.files import atomic_path
from keras_incremental.saving.portable import portable_optimizers
from keras_incremental.saving.run_state import FORMAT_VERSION
from keras_incremental.saving.run_state import RunState
from keras_incremental.utils.checks import check_path

STATE_ENTRY = "keras_incremental/state.json"
MEMORY_ENTRY = "keras_incremental/memory.h5"
STRATEGY_ENTRY = "keras_incremental/strategy.h5"
MAX_STATE_BYTES = 64 * 2**20
MAX_ARRAYS = 10_000
# The most values one stored sample may have when the model's input shape is
# free (a 1024 x 1024 image).
MAX_FREE_SAMPLE_ELEMENTS = 2**20
# Room for h5py's own structures around the data.
_H5_OVERHEAD_BYTES = 2**20


def check_checkpoint_path(path, must_exist=False, argument="checkpoint"):
    """Returns `path` as a string if it names a `.keras` file, or raises.

    Args:
        path: A string or `os.PathLike`.
        must_exist: Whether something must exist at `path` (a file to read).
            Defaults to `False`.
        argument: The name of the argument `path` was given as, for the
            error messages. Defaults to `"checkpoint"`.

    Raises:
        TypeError: when `path` is not a path
            (`keras_incremental.utils.checks.check_path`).
        ValueError: when it does not end in `.keras`, or nothing exists at
            it while `must_exist`.
    """
    path = check_path(
        path,
        argument,
        ".keras",
        hint="The checkpoint is a Keras model file.",
    )
    if must_exist:
        try:
            os.lstat(path)
        except FileNotFoundError:
            raise ValueError(
                f"No checkpoint at '{path}'; expected a file written by "
                "`IncrementalModel(checkpoint=...)`."
            ) from None
        except OSError:
            pass  # no permission: `safe_read.open_zip` says which
    return path


def write_checkpoint(path, model, state, memory=None, arrays=None):
    """Writes `model`, `state` (a `RunState`), `memory` and `arrays` (a
    dict of NumPy arrays by name: the strategy's learned state), atomically.

    The folder is made when missing.
    """
    path = check_checkpoint_path(path, argument="path")
    text = json.dumps(
        {"format": FORMAT_VERSION, **state.to_json()},
        indent=1,
        allow_nan=False,
    )
    with atomic_path(path, ".keras") as temporary:
        compat.cache_saving_skipsets()
        model.save(temporary)
        with zipfile.ZipFile(temporary, "a") as archive:
            archive.writestr(STATE_ENTRY, text)
            if memory is not None:
                archive.writestr(MEMORY_ENTRY, _memory_bytes(memory))
            if arrays:
                archive.writestr(STRATEGY_ENTRY, _arrays_bytes(arrays))


def _arrays_bytes(arrays):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        for index, (name, value) in enumerate(sorted(arrays.items())):
            # Names may hold "/" (variable paths): keep them as attributes.
            dataset = file.create_dataset(f"array_{index}", data=value)
            dataset.attrs["name"] = name
    return buffer.getvalue()


def _memory_bytes(memory):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        memory.save(file.create_group("memory"))
    return buffer.getvalue()


def read_checkpoint(path, memory_class, array_shapes=None):
    """Reads and checks a checkpoint written by `write_checkpoint`.

    Args:
        path: The checkpoint.
        memory_class: The class whose `load` reads the memory.
        array_shapes: Optional function `(model, head, state) -> dict or
            None`: the shapes the saved strategy declares for its arrays
            (`Strategy.state_shapes`; a name ending in `*` with the value
            `None` lets that prefix's arrays take the default bound).
            Defaults to `None`: none declared.

    Returns:
        `(model, state, memory, arrays)`: the model (loaded with
        `safe_mode`), the state (a `RunState`, checked), the memory
        (`None` when none was written) and the strategy's
        arrays (a dict, empty when none).

    Raises:
        ValueError: naming the file, the part and the problem, when `path`
            is not a readable checkpoint of this package or its parts are
            invalid or disagree. Nothing is changed.
    """
    path = check_checkpoint_path(path, must_exist=True, argument="path")
    with safe_read.open_zip(path, "checkpoint") as archive:
        names = set(archive.namelist())
        if STATE_ENTRY not in names:
            raise ValueError(
                f"'{path}' is a Keras file but not a keras_incremental "
                f"checkpoint (it has no '{STATE_ENTRY}'); expected a file "
                "written by `IncrementalModel(checkpoint=...)`."
            )
        data = safe_read.read_member(
            archive, STATE_ENTRY, path, MAX_STATE_BYTES
        )
        state = RunState.from_json(_state_json(data, path), path)
        model = _load_model(path)
        head = _head(model, state, path)
        memory = None
        if MEMORY_ENTRY in names:
            memory = _read_memory(archive, path, memory_class, model, state)
        arrays = {}
        if STRATEGY_ENTRY in names:
            shapes = None
            if array_shapes is not None:
                shapes = array_shapes(model, head, state)
            arrays = _read_arrays(archive, path, model, shapes)
    if len(state.classes) != head.units:
        raise ValueError(
            f"Checkpoint '{path}' is not valid: its state names "
            f"{len(state.classes)} classes but the head '{head.name}' has "
            f"{head.units} units; expected one unit per class. Nothing was "
            "changed."
        )
    if memory is not None:
        memory.check_classes(head.units, f"{path}: {MEMORY_ENTRY}")
    return model, state, memory, arrays


def _state_json(data, path):
    state = safe_read.read_json(data, path, STATE_ENTRY, allow_nan=True)
    # Format 1 wrote NaN accuracies as bare `NaN`; format 2 writes `null`.
    if isinstance(state, dict) and state.get("format") != 1:
        _refuse_nan(state, path)
    return state


def _refuse_nan(value, path):
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"Checkpoint '{path}' is not valid: '{STATE_ENTRY}' holds a "
            f"non-finite number ({value}); expected finite numbers, with "
            "`null` for an accuracy that could not be measured."
        )
    if isinstance(value, dict):
        for item in value.values():
            _refuse_nan(item, path)
    elif isinstance(value, list):
        for item in value:
            _refuse_nan(item, path)


def _load_model(path):
    compat.cache_saving_skipsets()
    try:
        return keras.saving.load_model(
            path, custom_objects=portable_optimizers(), safe_mode=True
        )
    except Exception as error:
        # Keras raises many kinds of errors for a damaged or hostile file;
        # the user needs to know it is this file, not their code.
        raise ValueError(
            f"Checkpoint '{path}' holds no model Keras can load safely "
            f"({type(error).__name__}: {error}); expected a file written by "
            "`IncrementalModel(checkpoint=...)`. Nothing was changed."
        ) from error


def _head(model, state, path):
    try:
        return find_head(model, state.settings["head"])
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Checkpoint '{path}' is not valid: its model has no head to "
            f"grow ({error}). Nothing was changed."
        ) from error


def _sample_shape(model):
    shape = tuple(model.inputs[0].shape[1:]) if model.inputs else ()
    if any(d is None for d in shape):
        return None
    return shape


def _read_memory(archive, path, memory_class, model, state):
    budget = state.settings["memory_size"]
    sample = _sample_shape(model)
    units = len(state.classes)
    values = MAX_FREE_SAMPLE_ELEMENTS if sample is None else math.prod(sample)
    row_bytes = 8 * values + 12 * units + 16
    data = safe_read.read_member(
        archive, MEMORY_ENTRY, path, budget * row_bytes + _H5_OVERHEAD_BYTES
    )
    part = f"{path}: {MEMORY_ENTRY}"
    with safe_read.h5_file(data, path, MEMORY_ENTRY) as file:
        group = safe_read.h5_child(file, "memory", h5py.Group, path)
        if group is None:
            raise ValueError(
                f"Checkpoint '{path}' is not valid: '{MEMORY_ENTRY}' has no "
                "'memory' group; expected one written by the package."
            )
        memory = memory_class.load(
            group,
            memory_size=budget,
            sample_shape=sample,
            source=part,
            max_width=units,
            max_sample_elements=MAX_FREE_SAMPLE_ELEMENTS
            if sample is None
            else None,
        )
    return memory


def _read_arrays(archive, path, model, shapes=None):
    """The strategy's arrays: each of the shape the strategy declares for
    `model` (`shapes`, a dict by name), or, without a declaration, each no
    larger than the model's largest weight and all of them at most two per
    weight. Every declared size is checked before any array is read."""
    weight_largest = max((math.prod(w.shape) for w in model.weights), default=1)
    weight_budget = 2 * sum(math.prod(w.shape) for w in model.weights)
    # Prefixes (`"0:*"`) whose arrays take the default bound.
    open_prefixes = []
    max_expansion = None
    if shapes is None:
        largest, budget = weight_largest, weight_budget
        expected = f"at most {budget} (two per weight of the model)"
    else:
        open_prefixes = [n[:-1] for n, s in shapes.items() if s is None]
        shapes = {
            name: tuple(shape)
            for name, shape in shapes.items()
            if shape is not None
        }
        largest = max((math.prod(s) for s in shapes.values()), default=0)
        budget = sum(math.prod(s) for s in shapes.values())
        if open_prefixes:
            largest = max(largest, weight_largest)
            budget += weight_budget
        expected = f"at most {budget} (the strategy's declared shapes)"
        # Declared statistics are dense floats, a few bytes each stored:
        # a member that expands far more is refused before it is read.
        max_expansion = 8
    data = safe_read.read_member(
        archive,
        STRATEGY_ENTRY,
        path,
        8 * budget + _H5_OVERHEAD_BYTES,
        max_expansion=max_expansion,
    )
    arrays = {}
    with safe_read.h5_file(data, path, STRATEGY_ENTRY) as file:
        keys = list(file.keys())
        if len(keys) > MAX_ARRAYS:
            raise ValueError(
                f"Checkpoint '{path}' is not valid: '{STRATEGY_ENTRY}' holds "
                f"{len(keys)} arrays; expected at most {MAX_ARRAYS}."
            )
        declared = 0
        names = []
        for key in keys:
            dataset = safe_read.h5_child(file, key, h5py.Dataset, path)
            if dataset is None:
                raise ValueError(
                    f"Checkpoint '{path}' is not valid: '{STRATEGY_ENTRY}' "
                    f"holds '{key}', which is not a dataset; expected arrays."
                )
            safe_read.check_dataset(dataset, path, max_elements=largest)
            name = safe_read.read_attr(dataset, "name", path, "str")
            declared_here = shapes is not None and not any(
                name.startswith(prefix) for prefix in open_prefixes
            )
            if declared_here and shapes.get(name) != dataset.shape:
                raise ValueError(
                    f"Checkpoint '{path}' is not valid: '{STRATEGY_ENTRY}' "
                    f"holds '{name}' of shape {dataset.shape}; expected "
                    + (
                        f"shape {shapes[name]}, derived from the model."
                        if name in shapes
                        else f"only the strategy's arrays {sorted(shapes)}."
                    )
                )
            declared += math.prod(dataset.shape)
            names.append(name)
        if declared > budget:
            raise ValueError(
                f"Checkpoint '{path}' is not valid: '{STRATEGY_ENTRY}' "
                f"declares {declared} values; expected {expected}."
            )
        for key, name in zip(keys, names, strict=True):
            value = safe_read.read_dataset(
                file, key, path, max_elements=largest, kinds="f"
            )
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"Checkpoint '{path}' is not valid: '{STRATEGY_ENTRY}' "
                    f"holds non-finite values in '{key}'; expected finite "
                    "numbers."
                )
            arrays[name] = value
    return arrays
