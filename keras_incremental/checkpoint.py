"""Stage checkpoints: one `.keras` file with the run's state inside.

A checkpoint is an ordinary `.keras` file (`keras.models.load_model` opens it)
with two more entries in its zip: `keras_incremental/state.json` (class names,
stage number, settings) and `keras_incremental/memory.h5` (the exemplar
memory, through h5py). It is written to a temporary file in the same folder
and moved into place with `os.replace`, so a crash at any moment leaves the
previous checkpoint whole.
"""

import io
import json
import os
import zipfile

import h5py
import keras

from keras_incremental.files import atomic_path

STATE_ENTRY = "keras_incremental/state.json"
MEMORY_ENTRY = "keras_incremental/memory.h5"
STRATEGY_ENTRY = "keras_incremental/strategy.h5"
FORMAT_VERSION = 1


def check_checkpoint_path(path, must_exist=False):
    """Returns `path` as a string if it names a `.keras` file, or raises."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Expected the checkpoint path to be a string or path ending in "
            f"'.keras'. Received: {path!r} of type {type(path).__name__}"
        )
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(
            "Expected a checkpoint path ending in '.keras' (the checkpoint is "
            f"a Keras model file). Received: '{path}'"
        )
    if must_exist and not os.path.isfile(path):
        raise ValueError(
            f"No checkpoint at '{path}'; expected a file written by "
            "`IncrementalModel(checkpoint=...)`."
        )
    return path


def write_checkpoint(path, model, state, memory=None, arrays=None):
    """Writes `model`, `state` (a JSON-able dict), `memory` and `arrays` (a
    dict of NumPy arrays by name: the strategy's learned state), atomically.

    The folder is made when missing.
    """
    path = check_checkpoint_path(path)
    with atomic_path(path, ".keras") as temporary:
        model.save(temporary)
        with zipfile.ZipFile(temporary, "a") as archive:
            archive.writestr(
                STATE_ENTRY,
                json.dumps({"format": FORMAT_VERSION, **state}, indent=1),
            )
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


def _read_arrays(data):
    with h5py.File(io.BytesIO(data), "r") as file:
        return {
            str(file[key].attrs["name"]): file[key][()] for key in file.keys()
        }


def _memory_bytes(memory):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        memory.save(file.create_group("memory"))
    return buffer.getvalue()


def read_checkpoint(path, memory_class):
    """Reads a checkpoint written by `write_checkpoint`.

    Returns:
        `(model, state, memory, arrays)`; `memory` is `None` when none was
        written, `arrays` an empty dict.

    Raises:
        ValueError: when `path` is not a checkpoint of this package.
    """
    path = check_checkpoint_path(path, must_exist=True)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if STATE_ENTRY not in names:
                raise ValueError(
                    f"'{path}' is a Keras file but not a keras_incremental "
                    f"checkpoint (it has no '{STATE_ENTRY}'); expected a file "
                    "written by `IncrementalModel(checkpoint=...)`."
                )
            state = json.loads(archive.read(STATE_ENTRY))
            memory = None
            arrays = {}
            if STRATEGY_ENTRY in names:
                arrays = _read_arrays(archive.read(STRATEGY_ENTRY))
            if MEMORY_ENTRY in names:
                buffer = io.BytesIO(archive.read(MEMORY_ENTRY))
                with h5py.File(buffer, "r") as file:
                    memory = memory_class.load(file["memory"])
    except zipfile.BadZipFile as error:
        raise ValueError(
            f"'{path}' is not a readable checkpoint ({error}); expected a "
            "`.keras` zip written by `IncrementalModel(checkpoint=...)`."
        ) from error
    model = keras.models.load_model(path)
    return model, state, memory, arrays
