#!/usr/bin/env bash
# The test suite on TensorFlow, JAX and PyTorch, one pytest run per backend
# (Keras picks its backend once per process), two workers each
# (pytest-xdist). Extra arguments go to every pytest run. Exits non-zero if
# any backend failed or collected no tests (pytest's exit code 5).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for backend in tensorflow jax torch; do
    echo "=== KERAS_BACKEND=$backend"
    start=$SECONDS
    KERAS_BACKEND=$backend pytest -n 2 -p no:cacheprovider "$@"
    code=$?
    echo "=== KERAS_BACKEND=$backend: exit $code in $((SECONDS - start)) s"
    if [ "$code" -eq 5 ]; then
        echo "pytest collected no tests on $backend: failing." >&2
    fi
    if [ "$code" -ne 0 ]; then
        status=1
    fi
done
exit "$status"
