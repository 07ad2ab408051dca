"""What growing a head costs: `expand` against rebuilding the model.

On a 20M-parameter MLP (784-4096-4096-10, Adam, trained one step) this times,
in one process:

- `keras_incremental.expand(model, 2)`: the head grows in place, the optimizer
  state and compiled functions follow (the median of 20 growths, and the
  first growth of the model on its own);
- the manual way users take today: build a model with a 12-unit head, copy the
  weights over, `compile`; once from the model in memory and once through a
  saved `.keras` file;

and the predict throughput of an `ExpandableDense` head against a `Dense` head
of the same shape and weights.

Neither side makes compiled functions: `compile` leaves them to `fit`, and
`expand` has the stale ones remade on their next call. The grown model then
runs a training step, with no `compile`.

Targets: `expand` at least 100x faster than rebuild-and-copy in memory;
`ExpandableDense` predict throughput at least 0.97 of `Dense`.

    python benchmarks/expand_cost.py --json expand_cost.json
"""

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_incremental as ki  # noqa: E402

FEATURES, HIDDEN, CLASSES, GROWTH = 784, 4096, 10, 2


def build(head_units, expandable):
    head_class = ki.ExpandableDense if expandable else keras.layers.Dense
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(HIDDEN, activation="relu", name="hidden_1"),
            keras.layers.Dense(HIDDEN, activation="relu", name="hidden_2"),
            head_class(head_units, name="head"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def trained(expandable):
    model = build(CLASSES, expandable)
    x = np.random.default_rng(0).random((32, FEATURES), dtype="float32")
    y = np.arange(32) % CLASSES
    model.train_on_batch(x, y)
    return model


def rebuild_and_copy(model):
    """The manual way: a wider head, the weights copied over, compile."""
    units = model.get_layer("head").units + GROWTH
    wider = build(units, expandable=False)
    for layer in model.layers:
        old = layer.get_weights()
        target = wider.get_layer(layer.name)
        if layer.name != "head":
            target.set_weights(old)
            continue
        kernel, bias = target.get_weights()
        kernel[:, : old[0].shape[1]] = old[0]
        bias[: old[1].shape[0]] = old[1]
        target.set_weights([kernel, bias])
    return wider


def rebuild_through_file(model, folder):
    path = os.path.join(folder, "model.keras")
    model.save(path)
    return rebuild_and_copy(keras.models.load_model(path))


def timed(function, repeats):
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def predict_throughput(samples, repeats):
    """Samples per second of `predict`, Dense head against ExpandableDense."""
    dense = build(CLASSES, expandable=False)
    expandable = build(CLASSES, expandable=True)
    expandable.set_weights(dense.get_weights())
    x = np.random.default_rng(1).random((samples, FEATURES), dtype="float32")
    np.testing.assert_array_equal(
        dense.predict(x[:64], verbose=0), expandable.predict(x[:64], verbose=0)
    )
    times = {"dense": [], "expandable": []}
    for _ in range(repeats):
        # Alternate, so that both see the same machine state.
        for name, model in (("dense", dense), ("expandable", expandable)):
            start = time.perf_counter()
            model.predict(x, batch_size=256, verbose=0)
            times[name].append(time.perf_counter() - start)
    return {name: samples / min(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--predict-samples", type=int, default=2048)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)

    model = trained(expandable=True)
    params = model.count_params()
    # The first growth of a model also gives the optimizer's slots for the
    # head a free last dimension (new variables); later ones assign.
    first_s = timed(lambda: ki.expand(model, GROWTH), 1)
    expand_s = timed(lambda: ki.expand(model, GROWTH), args.repeats * 4)
    # The grown model still trains, with no compile.
    x = np.random.default_rng(2).random((32, FEATURES), dtype="float32")
    model.train_on_batch(x, np.arange(32) % model.get_layer("head").units)

    baseline = trained(expandable=False)
    rebuild_s = timed(lambda: rebuild_and_copy(baseline), args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        file_s = timed(
            lambda: rebuild_through_file(baseline, folder),
            max(1, args.repeats // 2),
        )
    throughput = predict_throughput(args.predict_samples, args.repeats)
    ratio = throughput["expandable"] / throughput["dense"]

    results = {
        "parameters": params,
        "expand_seconds": expand_s,
        "expand_first_seconds": first_s,
        "rebuild_in_memory_seconds": rebuild_s,
        "rebuild_through_file_seconds": file_s,
        "speedup_vs_rebuild_in_memory": rebuild_s / expand_s,
        "speedup_vs_rebuild_through_file": file_s / expand_s,
        "predict_samples_per_second": throughput,
        "predict_throughput_ratio": ratio,
        "targets": {
            "speedup_vs_rebuild_in_memory": 100.0,
            "predict_throughput_ratio": 0.97,
        },
        "arguments": vars(args),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    rows = [
        ("parameters", f"{params:,}"),
        ("expand(model, 2), median", f"{expand_s * 1e3:.2f} ms"),
        ("expand(model, 2), first growth", f"{first_s * 1e3:.2f} ms"),
        ("rebuild + copy + compile (memory)", f"{rebuild_s * 1e3:.1f} ms"),
        ("rebuild through a .keras file", f"{file_s * 1e3:.1f} ms"),
        ("speedup vs memory rebuild (>= 100)", f"{rebuild_s / expand_s:.0f}x"),
        ("speedup vs file rebuild", f"{file_s / expand_s:.0f}x"),
        ("predict Dense (samples/s)", f"{throughput['dense']:.0f}"),
        (
            "predict ExpandableDense (samples/s)",
            f"{throughput['expandable']:.0f}",
        ),
        ("throughput ratio (>= 0.97)", f"{ratio:.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
