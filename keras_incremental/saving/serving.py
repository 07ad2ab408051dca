"""TensorFlow Serving export of a classifier, with its class names inside.

`export_for_serving` writes a SavedModel in the layout that TensorFlow
Serving watches: one numbered folder per version under a base folder. Its
`serving_default` signature answers with class probabilities, the index of
the most probable class and that class's name, so that a client needs
neither the model's code nor its list of classes. The SavedModel is built
with `keras.export.ExportArchive`, written to a temporary folder inside the
base folder and renamed to its version number at the end: TensorFlow Serving
never sees a half-written version, and a failed export leaves nothing behind.
A version can carry a dict of metadata (the training stage it holds, ...),
which `exported_versions` reads back.
"""

import collections
import json
import numbers
import os
import shutil
import stat
import tempfile

import keras
import numpy as np

from keras_incremental import compat
from keras_incremental.models.graph import graph_outputs
from keras_incremental.models.heads import passes_through
from keras_incremental.models.heads import walk_back
from keras_incremental.saving import export_worker
from keras_incremental.saving.files import open_mode
from keras_incremental.saving.files import partial_prefix
from keras_incremental.saving.files import remove_stale_partials
from keras_incremental.utils.checks import check_path
from keras_incremental.utils.messages import preview

SIGNATURE_NAME = "serving_default"
# The outputs every exported signature has.
SERVED_OUTPUTS = ("probabilities", "class_ids", "classes")
INPUT_NAME = "inputs"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# TensorFlow Serving refuses a warmup file with more records than this.
MAX_WARMUP_RECORDS = 1000
METADATA_FILE = os.path.join("assets.extra", "keras_incremental.json")
# The largest metadata file written, and read back by `exported_versions`.
MAX_METADATA_BYTES = 2**20
# The most characters of a wrong `metadata` that an error message shows.
_SHOWN = 200


def export_for_serving(
    model,
    export_dir,
    class_names=None,
    version=None,
    warmup_inputs=None,
    metadata=None,
    scores=None,
):
    """Writes `model` as a TensorFlow Serving SavedModel, with class names.

    The SavedModel goes to `export_dir/<version>/`, the layout that
    TensorFlow Serving's `--model_base_path` expects. Its `serving_default`
    signature (method `tensorflow/serving/predict`) takes one input,
    `inputs`, a batch shaped like the model's input, and returns:

    - `probabilities`: float32, `(batch, classes)`. The model's output when
      it ends in a softmax (its last layer, or the last layer of a nested
      model that makes its output); otherwise the output is taken as logits
      and a softmax is applied.
    - `class_ids`: int64, `(batch,)`, the index of the most probable class.
    - `classes`: string, `(batch,)`, the name of that class.
    - one float32 `(batch,)` output per entry of `scores`, when given.

    The version is written to a temporary folder inside `export_dir`
    (`.partial-<pid>-<random>`) and renamed at the end, so a version folder
    is either complete or absent; the temporary folders that killed exports
    left behind are removed (see `keras_incremental.saving.files.
    remove_stale_partials`). All arguments are checked before the model is
    traced or anything is written, and an existing version is never
    overwritten.

    The width of the model's output is found by tracing the model, so a
    head grown by `keras_incremental.expand` after the model was built is
    counted with its current number of units.

    Args:
        model: A built, single-input, single-output Keras classifier, made
            with `keras.Input` (a `Sequential` or functional model), on any
            backend. Off TensorFlow, the model is saved to a `.keras` file
            beside the export and the SavedModel is written from it by a
            TensorFlow-backend subprocess (a few seconds more): its layers
            must be Keras's own or registered serializable ones that the
            subprocess can import.
        export_dir: Base folder of the exported versions; made when missing.
        class_names: The class of each output unit, in order: a list of
            strings or integers (integers are written as their decimal
            string), or an object with a `classes_` attribute holding such a
            list, such as a `keras_incremental.IncrementalModel`. Defaults to
            `None`, which names the classes `"0"`, `"1"`, ...
        version: Positive integer, the version folder to write. Defaults to
            `None`, which takes one more than the largest numeric name in
            `export_dir`, of a folder, a file or a link alike (1 when there
            is none).
        warmup_inputs: Optional array of a few sample inputs (up to 1000),
            shaped `(samples, ...)` like a batch for the model. When given,
            `assets.extra/tf_serving_warmup_requests` is written inside the
            version folder: one `PredictionLog` record per sample, which
            TensorFlow Serving replays before it serves the version, so that
            the first real request is not slowed by graph loading. Needs the
            `tensorflow-serving-api` package. Defaults to `None` (no warmup
            file).
        metadata: Optional dict to keep with the version, such as the
            training stage it holds: written as JSON to
            `assets.extra/keras_incremental.json` inside the version folder,
            with the version and as atomically, and read back by
            `exported_versions`. It must read back equal: string keys, and
            values that are strings, numbers (not NaN or infinite), booleans,
            `None`, lists and dicts of these; at most 1 MiB as JSON.
            Defaults to `None` (no metadata file).
        scores: Optional dict mapping output names (identifiers, none of
            `probabilities`, `class_ids`, `classes`) to Keras layers that
            map the model's output (logits or probabilities, as the model
            gives them) to one score per sample; each is answered as a
            float32 `(batch,)` output of the signature. Off TensorFlow each
            layer is rebuilt from its config in the export's TensorFlow
            subprocess: a Keras layer or a registered serializable one.
            Defaults to `None` (none).

    Returns:
        The path of the version folder written, as a string.

    Raises:
        ValueError: when the model is not built, has more than one input or
            output, or has no output units; when `class_names` does not name
            each output unit exactly once; when `export_dir` is a file; when
            `version` is not positive or exists already; when
            `warmup_inputs` does not fit the model's input; when `metadata`
            would not read back equal or is too large.
        TypeError: when `model`, `class_names`, `version` or `metadata` is
            of the wrong type, or `metadata` holds a value JSON cannot
            write.
        ImportError: when `warmup_inputs` is given and
            `tensorflow-serving-api` is not installed.
        RuntimeError: off TensorFlow, when the export subprocess fails; its
            error output is in the message.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="relu"),
        keras_incremental.ExpandableDense(3, name="head"),
    ])
    path = keras_incremental.export_for_serving(
        model, "models/flowers", class_names=["rose", "tulip", "iris"]
    )
    # path == "models/flowers/1"; serve it with
    # tensorflow_model_server --model_name=flowers \
    #     --model_base_path=/abs/path/models/flowers
    reloaded = tf.saved_model.load(path)
    answer = reloaded.signatures["serving_default"](
        inputs=tf.constant(x, dtype="float32")
    )
    answer["classes"]  # e.g. [b"tulip", b"rose", ...]
    ```
    """
    # Every check first, the cheap ones before the trace that finds the
    # output width: nothing is traced or written for a call that fails.
    input_spec = _input_spec(model)
    scores = check_scores(scores)
    export_dir = _check_export_dir(export_dir)
    version = _check_version(version, export_dir)
    metadata_text = _metadata_text(metadata)
    names = _class_names(class_names)
    warmup = None
    if warmup_inputs is not None:
        warmup = _warmup_records(
            warmup_inputs, input_spec, os.path.basename(export_dir)
        )
    width = _output_width(model, input_spec)
    names = _check_class_count(names, width)

    made_export_dir = not os.path.exists(export_dir)
    os.makedirs(export_dir, exist_ok=True)
    remove_stale_partials(export_dir)
    target = os.path.join(export_dir, str(version))
    temporary = tempfile.mkdtemp(prefix=partial_prefix(), dir=export_dir)
    open_mode(temporary, directory=True)
    try:
        if keras.backend.backend() == "tensorflow":
            write_saved_model(model, temporary, names, scores)
        else:
            export_worker.write_saved_model_in_tensorflow(
                model, temporary, names, export_dir, scores
            )
        if warmup is not None:
            _write_warmup(os.path.join(temporary, WARMUP_FILE), warmup)
        if metadata_text is not None:
            _write_metadata(
                os.path.join(temporary, METADATA_FILE), metadata_text
            )
        if os.path.lexists(target):
            # Made by someone else while this export was being written.
            raise ValueError(
                f"Version folder '{target}' appeared while the export was "
                "being written; expected it to stay free. Export again with "
                "another `version`, or `version=None`."
            )
        os.rename(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        if made_export_dir:
            try:
                os.rmdir(export_dir)
            except OSError:
                pass
        raise
    return target


def check_scores(scores):
    """Checks the `scores` of `export_for_serving`; returns a dict.

    Args:
        scores: `None`, or a dict mapping output names to Keras layers that
            map the model's output (logits or probabilities, float32,
            `(batch, classes)`) to one score per sample, `(batch,)`.

    Raises:
        TypeError: for a value that is not such a dict.
        ValueError: for a name that a served output has already, or that
            is not a plain identifier.
    """
    if scores is None:
        return {}
    if not isinstance(scores, dict):
        raise TypeError(
            "Expected `scores` to be a dict mapping output names to Keras "
            f"layers. Received: scores={scores!r}"
        )
    for name, layer in scores.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                "Expected the names of `scores` to be identifiers (they name "
                f"outputs of the serving signature). Received: {name!r}"
            )
        if name in SERVED_OUTPUTS:
            raise ValueError(
                f"The score name {name!r} is an output the signature has "
                f"already; expected another than {sorted(SERVED_OUTPUTS)}."
            )
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"Expected the score {name!r} to be a Keras layer. Received: "
                f"{layer!r} of type {type(layer).__name__}"
            )
    return dict(scores)


def write_saved_model(model, folder, names, scores=None):
    """Writes the serving SavedModel of a TensorFlow-backend `model` (its
    signature answering with `names`, and `scores`) into the empty
    `folder`."""
    input_spec = _input_spec(model)
    # A grown head's variables have a free last dimension; the export
    # records the width they have now.
    with compat.fixed_shapes(model.weights):
        archive = keras.export.ExportArchive()
        # Tracks the layers rather than the model: `track(model)` makes
        # the export walk everything the model holds, its optimizer
        # included, to find lookup tables, and serving needs none of the
        # training state. The variables saved are those the endpoint
        # uses.
        for layer in model.layers:
            archive.track(layer)
        archive.add_endpoint(
            SIGNATURE_NAME,
            _serving_function(
                model, names, _ends_in_softmax(model), scores or {}
            ),
            input_signature=[input_spec],
        )
        archive.write_out(folder, verbose=False)


def _input_spec(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a `keras.Model`. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built; expected a built model with "
            "a known input shape. Start the model with `keras.Input(shape)`, "
            "or call `model.build(input_shape)` before exporting it."
        )
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise ValueError(
            f"Model '{model.name}' has no defined inputs; expected a "
            "`Sequential` or functional model made with `keras.Input`. "
            f"Received a model of type {type(model).__name__}"
        )
    if len(inputs) != 1:
        raise ValueError(
            f"Model '{model.name}' has {len(inputs)} inputs; expected a "
            "classifier with one input."
        )
    import tensorflow as tf

    shape = (None,) + tuple(inputs[0].shape[1:])
    return tf.TensorSpec(shape, dtype=inputs[0].dtype, name=INPUT_NAME)


def _output_width(model, input_spec):
    # `model.outputs` and `compute_output_shape` keep the width the model
    # was built with; a head grown since then is seen only by a real call.
    import tensorflow as tf

    if keras.backend.backend() == "tensorflow":
        traced = tf.function(lambda inputs: model(inputs, training=False))
        outputs = traced.get_concrete_function(input_spec).structured_outputs
        shape = outputs.shape if tf.is_tensor(outputs) else None
    else:
        # No tracing across backends: one sample through the model.
        sample = np.zeros(
            [1 if d is None else d for d in input_spec.shape],
            input_spec.dtype.as_numpy_dtype,
        )
        outputs = model(sample, training=False)
        shape = outputs.shape if keras.ops.is_tensor(outputs) else None
        shape = None if shape is None else tf.TensorShape([None, *shape[1:]])
    if shape is None:
        raise ValueError(
            f"Model '{model.name}' returns a {type(outputs).__name__}; "
            "expected a classifier with one output tensor."
        )
    width = shape[-1] if shape.rank else None
    if width is None:
        raise ValueError(
            f"Model '{model.name}' gives outputs of shape {outputs.shape}; "
            "expected a known number of classes on the last axis."
        )
    if width == 0:
        raise ValueError(
            f"Model '{model.name}' has 0 output units; expected a "
            "classifier that knows at least one class. Train a first stage "
            "(or `keras_incremental.expand` the head) before exporting it."
        )
    return width


def _class_names(class_names):
    """The class names as strings (`None` for the default names), checked
    for type and duplicates; their count is checked once the width of the
    model's output is known (`_check_class_count`)."""
    if class_names is None:
        return None
    if hasattr(class_names, "classes_"):
        class_names = class_names.classes_
    if isinstance(class_names, (str, bytes)) or not hasattr(
        class_names, "__iter__"
    ):
        raise TypeError(
            "Expected `class_names` to be a list of names (strings or "
            "integers), an object with a `classes_` list, or `None`. "
            f"Received: class_names={class_names!r}"
        )
    names = []
    for name in class_names:
        if isinstance(name, str):
            names.append(str(name))
        elif isinstance(name, bytes):
            names.append(name.decode("utf-8"))
        elif isinstance(name, numbers.Integral) and not isinstance(
            name, (bool, np.bool_)
        ):
            names.append(str(int(name)))
        else:
            raise TypeError(
                "Expected each class name to be a string, bytes or an "
                "integer. "
                f"Received: {name!r} of type {type(name).__name__} in "
                f"class_names={list(class_names)!r}"
            )
    counts = collections.Counter(names)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise ValueError(
            "Expected distinct class names. Received duplicates "
            f"{duplicates!r} in class names {names!r}"
        )
    return names


def _check_class_count(names, width):
    if names is None:
        return [str(index) for index in range(width)]
    if len(names) != width:
        raise ValueError(
            f"Expected one class name per output unit: the model has {width} "
            f"output units. Received {len(names)} class names: {names!r}"
        )
    return names


def _check_export_dir(export_dir):
    export_dir = check_path(export_dir, "export_dir", folder=True)
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ValueError(
            f"'{export_dir}' is a file; expected `export_dir` to be a folder "
            "(or a path where one can be made) to hold the numbered version "
            f"folders. Received: export_dir='{export_dir}'"
        )
    return export_dir


def _numeric_entries(export_dir, keep=None):
    """The entries of `export_dir` named by a number, of any kind (folder,
    file, link), as `{number: name}`: TensorFlow Serving reads a numeric
    folder name as a version (`"0004"` as 4), and a version folder cannot be
    made where such a name is taken. `keep`, when given, tells which names
    to keep."""
    try:
        names = os.listdir(export_dir)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    entries = {}
    for name in sorted(names):
        if not (name.isascii() and name.isdigit()):
            continue
        if keep is not None and not keep(name):
            continue
        # The plain spelling of a number wins over one with zeros.
        if int(name) not in entries or name == str(int(name)):
            entries[int(name)] = name
    return entries


def _check_version(version, export_dir):
    versions = _numeric_entries(export_dir)
    if version is None:
        return max(versions, default=0) + 1
    if not isinstance(version, numbers.Integral) or isinstance(
        version, (bool, np.bool_)
    ):
        raise TypeError(
            "Expected `version` to be a positive integer or `None`. "
            f"Received: version={version!r} of type {type(version).__name__}"
        )
    version = int(version)
    if version < 1:
        raise ValueError(
            "Expected `version` to be a positive integer or `None`. "
            f"Received: version={version}"
        )
    if version in versions or os.path.lexists(
        os.path.join(export_dir, str(version))
    ):
        existing = os.path.join(export_dir, versions.get(version, str(version)))
        raise ValueError(
            f"Version {version} exists already at '{existing}'; an export "
            "never overwrites one. Pick another `version` (or `None` for the "
            "next free one), or remove the folder first. "
            f"Received: version={version}"
        )
    return version


def _ends_in_softmax(model):
    """Whether `model`'s output is made by a softmax, also one inside a
    nested model (a classifier built around a `Sequential` whose last layer
    is a softmax `Dense`, ...), before layers that pass their input through
    at inference (an adopted softmax `Dense` followed by `Dropout`)."""
    outputs = graph_outputs(model)
    if outputs is None or len(outputs) != 1:
        # No graph to follow (a subclassed model): its last layer decides.
        layers = getattr(model, "layers", None)
        return bool(layers) and _made_by_softmax(layers[-1], 0)
    return _from_softmax(model, 0)


def _from_softmax(model, index):
    """Whether output `index` of a model with a graph is a softmax's,
    looking back through layers that pass their input through at
    inference, into nested models with a graph."""
    for step in walk_back(model, _has_graph, index):
        if (
            step.operation is not None
            and passes_through(step.operation)
            and len(step.inputs) == 1
        ):
            continue
        return _made_by_softmax(step.operation, step.index)
    return False


def _has_graph(operation):
    return (
        isinstance(operation, keras.Model)
        and graph_outputs(operation) is not None
    )


def _made_by_softmax(operation, index):
    """Whether output `index` of a layer or operation is a softmax's."""
    if operation is None:
        return False
    if compat.is_softmax(operation):
        return True
    if not isinstance(operation, keras.Model):
        return False
    if graph_outputs(operation) is None:
        return _ends_in_softmax(operation)
    return _from_softmax(operation, index)


def _serving_function(model, names, ends_in_softmax, scores):
    import tensorflow as tf

    def serve(inputs):
        outputs = tf.cast(model(inputs, training=False), tf.float32)
        if ends_in_softmax:
            probabilities = outputs
        else:
            probabilities = tf.nn.softmax(outputs, axis=-1)
        class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        classes = tf.gather(tf.constant(names, dtype=tf.string), class_ids)
        answer = {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "classes": classes,
        }
        for name, layer in scores.items():
            answer[name] = tf.reshape(tf.cast(layer(outputs), tf.float32), [-1])
        return answer

    return serve


def _warmup_records(warmup_inputs, input_spec, model_name):
    """Serialized `PredictionLog` records, one per sample."""
    try:
        from tensorflow_serving.apis import model_pb2
        from tensorflow_serving.apis import predict_pb2
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "Writing TensorFlow Serving warmup requests (`warmup_inputs`) "
            "needs the `tensorflow-serving-api` package. Install it with "
            "`pip install tensorflow-serving-api`, or export without "
            "`warmup_inputs`."
        ) from error

    import tensorflow as tf

    dtype = input_spec.dtype.as_numpy_dtype
    try:
        samples = np.asarray(warmup_inputs, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(
            "Expected `warmup_inputs` to be an array of "
            f"{input_spec.dtype.name} samples. Received an object of type "
            f"{type(warmup_inputs).__name__} ({error})"
        ) from error
    expected = tuple(input_spec.shape)
    if not input_spec.shape.is_compatible_with(samples.shape):
        raise ValueError(
            "Expected `warmup_inputs` to be a batch of samples shaped like the "
            f"model's input {expected}. Received an array of shape "
            f"{samples.shape}"
        )
    if not 1 <= len(samples) <= MAX_WARMUP_RECORDS:
        raise ValueError(
            f"Expected 1 to {MAX_WARMUP_RECORDS} warmup samples (TensorFlow "
            "Serving reads at most that many). Received "
            f"{len(samples)} samples"
        )
    records = []
    for sample in samples:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(
                name=model_name, signature_name=SIGNATURE_NAME
            ),
        )
        request.inputs[INPUT_NAME].CopyFrom(
            tf.make_tensor_proto(sample[None], dtype=input_spec.dtype)
        )
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


def _metadata_text(metadata):
    """`metadata` as the JSON text to write, checked; `None` for none."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(
            "Expected `metadata` to be a dict (of JSON values) or `None`. "
            f"Received: metadata={preview(metadata, width=_SHOWN)} of type "
            f"{type(metadata).__name__}"
        )
    try:
        text = json.dumps(metadata, allow_nan=False, indent=2)
        read_back = json.loads(text)
    except TypeError as error:
        raise TypeError(
            "Expected `metadata` to hold JSON values only (strings, numbers, "
            f"booleans, `None`, lists and dicts of these); {error}. Convert "
            "the others (NumPy numbers with `int` or `float`, for instance). "
            f"Received: metadata={preview(metadata, width=_SHOWN)}"
        ) from error
    except (ValueError, RecursionError) as error:
        raise ValueError(
            "Expected `metadata` to be writable as JSON: no NaN or infinite "
            f"numbers, no circular or too deep nesting ({error}). "
            f"Received: metadata={preview(metadata, width=_SHOWN)}"
        ) from error
    if read_back != metadata:
        raise ValueError(
            "Expected `metadata` to read back equal from JSON, with string "
            "keys and lists rather than tuples; it would read back as "
            f"{preview(read_back, width=_SHOWN)}. "
            f"Received: metadata={preview(metadata, width=_SHOWN)}"
        )
    size = len(text.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"Expected `metadata` of at most {MAX_METADATA_BYTES} bytes as "
            f"JSON. Received metadata of {size} bytes; keep large data in a "
            "file of its own and its path in `metadata`."
        )
    return text


def _write_metadata(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
        file.write("\n")


def exported_versions(export_dir):
    """The complete versions in a base folder of `export_for_serving`.

    A version is a folder named by a number (as TensorFlow Serving reads
    it: `"0004"` is 4) that holds a SavedModel. The metadata of each is the
    dict given to `export_for_serving(..., metadata=...)`. The files are
    read as untrusted input: a metadata file that is missing, not a regular
    file, larger than 1 MiB, not UTF-8 JSON, or not a JSON object gives
    `None` rather than an error.

    Args:
        export_dir: Base folder of the versions (string or `os.PathLike`).

    Returns:
        A dict `{version: metadata}` sorted by version: `version` an `int`,
        `metadata` a dict, or `None` for a version without (readable)
        metadata. Empty for a missing folder.

    Raises:
        TypeError: when `export_dir` is not a path.
        ValueError: when `export_dir` is a file.

    Example:

    ```python
    keras_incremental.export_for_serving(
        model, "models/flowers", names, metadata={"stage": 1}
    )
    keras_incremental.saving.serving.exported_versions("models/flowers")
    # {1: {"stage": 1}}
    ```
    """
    export_dir = _check_export_dir(export_dir)

    def complete(name):
        folder = os.path.join(export_dir, name)
        return any(
            os.path.isfile(os.path.join(folder, saved))
            for saved in ("saved_model.pb", "saved_model.pbtxt")
        )

    entries = _numeric_entries(export_dir, keep=complete)
    return {
        version: _read_metadata(
            os.path.join(export_dir, entries[version], METADATA_FILE)
        )
        for version in sorted(entries)
    }


def _read_metadata(path):
    """The dict in metadata file `path`, or `None` when there is none that
    is a regular file of at most `MAX_METADATA_BYTES` holding a JSON object."""
    # Non-blocking: opening a FIFO for reading would wait for a writer.
    flags = (
        os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    )
    try:
        handle = os.open(path, flags)
    except OSError:
        return None
    try:
        with os.fdopen(handle, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return None
            data = file.read(MAX_METADATA_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_METADATA_BYTES:
        return None
    try:
        metadata = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return metadata if isinstance(metadata, dict) else None


def _write_warmup(path, records):
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
