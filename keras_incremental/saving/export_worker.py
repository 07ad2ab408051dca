"""Serving exports of JAX and PyTorch models, written by TensorFlow.

A TensorFlow SavedModel is traced with TensorFlow ops, which a model on
another backend cannot run in the same process (the backend is chosen once,
at import). `write_saved_model_in_tensorflow` saves the model as a `.keras`
file and runs this module as a subprocess with `KERAS_BACKEND=tensorflow`,
which loads the file and writes the SavedModel with the same signature and
class names as a TensorFlow model's export. Only our own file, just written
into a private temporary folder, is loaded, with `safe_mode=True` and
without compiling (the optimizer's state is saved but not read).
"""

import json
import os
import subprocess
import sys
import tempfile

import keras

from keras_incremental.saving.files import partial_prefix

# The longest an export subprocess may run: importing TensorFlow, loading the
# model and tracing it take seconds; a hung one must not hang the stage.
TIMEOUT_SECONDS = 600
# The last characters of the subprocess's error output put in the message.
ERROR_TAIL = 4000


def write_saved_model_in_tensorflow(
    model, folder, names, scratch_dir, scores=None
):
    """Writes the serving SavedModel of `model` into the empty `folder`.

    Args:
        model: The Keras model, on any backend.
        folder: The empty folder the SavedModel goes to.
        names: The class names, one per output unit.
        scratch_dir: The folder for the temporary `.keras` file (a
            `.partial-` name, removed afterwards).
        scores: Optional dict of score layers (see `export_for_serving`).

    Raises:
        RuntimeError: when the subprocess fails or runs too long; its error
            output is in the message.
    """
    with tempfile.TemporaryDirectory(
        prefix=partial_prefix(), dir=scratch_dir
    ) as scratch:
        scratch = os.path.abspath(scratch)
        source = os.path.join(scratch, "model.keras")
        model.save(source)
        request = os.path.join(scratch, "request.json")
        with open(request, "w", encoding="utf-8") as file:
            json.dump(
                {
                    "source": source,
                    "folder": os.path.abspath(folder),
                    "names": names,
                    # Rebuilt from their configs there: a score layer must
                    # be a Keras one or a registered one the worker imports.
                    "scores": {
                        name: keras.saving.serialize_keras_object(layer)
                        for name, layer in (scores or {}).items()
                    },
                },
                file,
            )
        try:
            done = subprocess.run(
                [sys.executable, "-m", __name__, request],
                env=_environment(),
                # Not the caller's folder, whose modules `-m` would import
                # ahead of the installed ones.
                cwd=scratch,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(
                "The TensorFlow subprocess writing the serving export of "
                f"model '{model.name}' did not finish in {TIMEOUT_SECONDS} "
                "s; expected it to load the model and trace it in seconds. "
                "Nothing was exported."
            ) from error
        if done.returncode != 0:
            raise RuntimeError(
                "The TensorFlow subprocess writing the serving export of "
                f"model '{model.name}' failed (exit code {done.returncode}); "
                "nothing was exported. It loads the model from a `.keras` "
                "file: every layer must be a Keras one or a registered "
                "serializable one that a fresh process can import. Its "
                "error output ends with:\n" + done.stderr[-ERROR_TAIL:]
            )


def _environment():
    """The subprocess's environment: TensorFlow, on the CPU (tracing needs
    no accelerator, and JAX or PyTorch may hold the GPU), able to import
    this package the way the caller did."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The folder that holds `keras_incremental/` (this file is in
    # `keras_incremental/saving/`).
    here = os.path.abspath(__file__)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    paths = [package_root, *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def main(argv):
    """Loads the request's model on TensorFlow and writes its export."""
    import keras

    from keras_incremental.saving import serving

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(
            "keras_incremental.saving.export_worker needs "
            "KERAS_BACKEND=tensorflow; "
            f"received {keras.backend.backend()!r}."
        )
    (request,) = argv
    with open(request, encoding="utf-8") as file:
        spec = json.load(file)
    model = keras.saving.load_model(
        spec["source"], compile=False, safe_mode=True
    )
    scores = {
        name: keras.saving.deserialize_keras_object(config, safe_mode=True)
        for name, config in spec.get("scores", {}).items()
    }
    serving.write_saved_model(model, spec["folder"], spec["names"], scores)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
