"""Test setup: the backend, quiet TensorFlow, two logical CPU devices.

The suite runs on the backend `KERAS_BACKEND` names (TensorFlow when unset);
`tests/all-backends.sh` runs it on TensorFlow, JAX and PyTorch. Tests marked
`backend_independent` (file parsing, metrics arithmetic, style) run on
TensorFlow only: they do not touch a backend, and running them three times
would only cost time.

On TensorFlow the devices must be configured before its runtime starts, so
it is done here, at collection time, once for the whole session; it lets the
`tf.distribute.MirroredStrategy` tests run on a CPU-only machine.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# JAX compiles every function, eager operations included, once per shape;
# the tests build many equal tiny models, whose compiled code a persistent
# cache shares across tests and workers.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # A private folder: JAX loads the compiled code it finds there.
    _cache = os.path.join(
        tempfile.gettempdir(), f"keras-incremental-jax-cache-{os.getuid()}"
    )
    os.makedirs(_cache, mode=0o700, exist_ok=True)
    if os.stat(_cache).st_uid == os.getuid():
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests check results, not speed: XLA's quickest compilation (about
# half the time of the default, which dominates a JAX test's time).
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import keras  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backend_independent: touches no Keras backend; runs on TensorFlow "
        "only",
    )
    config.addinivalue_line(
        "markers",
        "end_to_end: a whole demo, tutorial or benchmark run; runs on "
        "TensorFlow only (minutes on JAX, one compile per stage), its parts "
        "being tested on every backend",
    )


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    reasons = {
        "backend_independent": "backend-independent: runs once, on TensorFlow",
        "end_to_end": "end to end: runs once, on TensorFlow",
    }
    for item in items:
        for marker, reason in reasons.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))
                break


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
