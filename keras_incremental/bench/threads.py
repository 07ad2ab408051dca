"""The benchmark's backend and compute threads, set for a child process.

Keras picks its backend once per process, when it is imported, and the
backends size their thread pools when they start. So `bench --backend` and
`bench --threads` run the benchmark in a child process whose environment
names the backend and the thread counts before anything starts; the child
then pins its CPU affinity (and PyTorch's thread counts) first thing.
"""

import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")
# Set in the child's environment: the thread count it was started with, or
# `DEFAULT_THREADS` when the threads are left to the backend. Its presence
# tells the child that it is the child (no second child).
CHILD_VARIABLE = "KERAS_INCREMENTAL_BENCH_CHILD"
DEFAULT_THREADS = "default"
# Thread pools sized by environment variables: OpenMP (PyTorch's intra-op
# pool, MKL-DNN), MKL, OpenBLAS (NumPy), TensorFlow's intra-op pool.
INTRA_OP_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)
# XLA (JAX) options replaced by `--threads`; any other flag is kept.
XLA_THREAD_FLAGS = (
    "--xla_cpu_multi_thread_eigen",
    "intra_op_parallelism_threads",
)


def available_cpus():
    """The CPUs this process may run on, sorted.

    Returns:
        A list of CPU ids: the process's affinity mask where the platform
        has one (Linux), else `0 .. os.cpu_count() - 1`.
    """
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def check_backend(backend):
    """Raises `ValueError` unless `backend` is a Keras backend name."""
    if backend not in BACKENDS:
        raise ValueError(
            "Received an invalid value for `backend`, expected one of "
            f"{', '.join(BACKENDS)}. Received: backend={backend!r}"
        )
    return backend


def check_threads(threads, cpus=None):
    """Raises `ValueError` unless `threads` is a positive integer no larger
    than the number of CPUs available.

    Args:
        threads: The requested number of compute threads.
        cpus: The CPUs available. Defaults to `available_cpus()`.

    Returns:
        `threads`.
    """
    cpus = available_cpus() if cpus is None else list(cpus)
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise ValueError(
            "Received an invalid value for `threads`, expected a positive "
            f"integer. Received: threads={threads!r}"
        )
    if threads < 1:
        raise ValueError(
            "Received an invalid value for `threads`, expected a positive "
            f"integer. Received: threads={threads}"
        )
    if threads > len(cpus):
        raise ValueError(
            f"Received an invalid value for `threads`, expected at most "
            f"{len(cpus)}: the CPUs this process may run on ({len(cpus)}). "
            f"Received: threads={threads}"
        )
    return threads


def needs_child(backend, threads, current_backend, environ=None):
    """Whether the benchmark must run in a child process.

    It must when `backend` is not the backend this process already runs,
    or when `threads` is set and this process was not started with that
    thread count (the pools are sized when the backend starts).

    Args:
        backend: The requested backend.
        threads: The requested thread count, or `None` for the backend's
            default.
        current_backend: `keras.backend.backend()` of this process.
        environ: The environment of this process. Defaults to
            `os.environ`.
    """
    environ = os.environ if environ is None else environ
    if backend != current_backend:
        return True
    return threads is not None and environ.get(CHILD_VARIABLE) != str(threads)


def is_child(environ=None):
    """Whether this process was started by `child_environment`'s settings."""
    environ = os.environ if environ is None else environ
    return CHILD_VARIABLE in environ


def child_environment(backend, threads=None, environ=None):
    """The environment of a benchmark child process.

    `KERAS_BACKEND` names the backend. With `threads`, every backend's
    intra-op pool gets `threads` threads and the inter-op pools one:
    `OMP_NUM_THREADS`, `MKL_NUM_THREADS`, `OPENBLAS_NUM_THREADS` and
    `TF_NUM_INTRAOP_THREADS` are `threads`; `TF_NUM_INTEROP_THREADS` is
    `1`, so that TensorFlow runs one op at a time, each on `threads`
    threads, as PyTorch does with `torch.set_num_interop_threads(1)`: at
    most `threads` busy compute threads on every backend (the benchmark's
    MLP is a chain of ops, which inter-op parallelism cannot speed up).
    `XLA_FLAGS` keeps its flags, but for
    `--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N`.
    Without `threads`, the thread settings of `environ` are kept.

    Args:
        backend: One of `"tensorflow"`, `"jax"`, `"torch"`.
        threads: A positive integer, or `None` to leave the threads to the
            backend. Defaults to `None`.
        environ: The environment to start from. Defaults to `os.environ`.

    Returns:
        A new dict; `environ` is not changed.

    Example:

    >>> env = child_environment("jax", 1, environ={})
    >>> env["KERAS_BACKEND"], env["OMP_NUM_THREADS"]
    ('jax', '1')
    """
    check_backend(backend)
    result = dict(os.environ if environ is None else environ)
    result["KERAS_BACKEND"] = backend
    if threads is None:
        result[CHILD_VARIABLE] = DEFAULT_THREADS
        return result
    check_threads(threads)
    result[CHILD_VARIABLE] = str(threads)
    for name in INTRA_OP_VARIABLES:
        result[name] = str(threads)
    result["TF_NUM_INTEROP_THREADS"] = "1"
    kept = [
        flag
        for flag in result.get("XLA_FLAGS", "").split()
        if flag.split("=")[0] not in XLA_THREAD_FLAGS
    ]
    result["XLA_FLAGS"] = " ".join(
        [
            *kept,
            "--xla_cpu_multi_thread_eigen=false",
            f"intra_op_parallelism_threads={threads}",
        ]
    )
    return result


def child_command(argv):
    """The command line of a benchmark child process: this Python running
    `keras_incremental.bench` with the same arguments `argv`."""
    return [sys.executable, "-m", "keras_incremental.bench", *argv]


def pin(threads, backend):
    """Pins this process to `threads` compute threads, first thing in the
    child.

    Restricts the CPU affinity of every thread of the process to the first
    `threads` CPUs it may run on (where the platform allows it; threads
    started later inherit it), and with PyTorch calls
    `torch.set_num_threads(threads)` and `torch.set_num_interop_threads(1)`,
    which must come before any PyTorch op.

    Args:
        threads: A positive integer, at most the number of CPUs available.
        backend: The backend this process runs.

    Returns:
        The CPU ids the process now runs on.
    """
    cpus = available_cpus()[: check_threads(threads)]
    if hasattr(os, "sched_setaffinity"):
        try:
            tasks = [int(task) for task in os.listdir("/proc/self/task")]
        except OSError:
            tasks = []
        for task in tasks:
            try:
                os.sched_setaffinity(task, cpus)
            except ProcessLookupError:
                pass  # The thread ended meanwhile.
        os.sched_setaffinity(0, cpus)
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        if torch.get_num_interop_threads() != 1:
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError as error:
                raise RuntimeError(
                    "Could not set PyTorch's inter-op threads to 1: a "
                    "PyTorch op ran before `pin`. Call `pin` first thing in "
                    f"the process. Received: {error}"
                ) from error
    return cpus
