import keras
import numpy as np

from keras_incremental.optimizers.gradients import gradient_function
from keras_incremental.strategies.features import logits_of
from keras_incremental.strategies.strategy import Strategy
from keras_incremental.utils.checks import check_integer
from keras_incremental.utils.checks import check_number


class EWC(Strategy):
    """Elastic weight consolidation: weights important to earlier stages are
    pulled back towards their values.

    After each stage the diagonal of the empirical Fisher information is
    estimated on up to `samples` of the stage's samples (squared gradients of
    each sample's log-likelihood) and added to the running total (online
    EWC); the loss of later stages adds
    `weight / 2 * sum(F * (theta - theta_old) ** 2)`. Head units added later
    have no anchor. Needs the stage as NumPy arrays, and the TensorFlow
    backend for the gradients.

    Args:
        weight: The penalty's weight (lambda), >= 0. Defaults to `1000.0`.
        samples: How many of the stage's samples estimate the Fisher
            information, a positive integer. Defaults to `200`.
        seed: Seed choosing those samples, a non-negative integer. Defaults
            to `0`.

    Example:

    ```python
    inc = keras_incremental.IncrementalModel(strategy=EWC(weight=500.0))
    ```

    References:
        - [Kirkpatrick et al., 2017](https://arxiv.org/abs/1612.00796),
          Overcoming Catastrophic Forgetting in Neural Networks.
        - [Schwarz et al., 2018](https://arxiv.org/abs/1805.06370), Progress
          & Compress (online EWC).
    """

    name = "ewc"
    needs_arrays = True

    def __init__(self, weight=1000.0, samples=200, seed=0):
        self.weight = check_number(weight, "weight", minimum=0)
        self.samples = check_integer(samples, "samples", 1)
        # NumPy's generators take any non-negative integer.
        self.seed = check_integer(seed, "seed", 0)
        self._fisher = {}
        self._anchor = {}

    def begin_stage(self, context):
        if context.data is None:
            raise ValueError(
                "EWC estimates the Fisher information from the stage's "
                "samples, so it needs NumPy arrays in `prepare`; received a "
                "`tf.data.Dataset`."
            )

    def loss(self, context, x, y, y_pred):
        if not self._fisher:
            return None
        ops = keras.ops
        total = 0.0
        keys = _keys(context.model)
        for variable in context.model.trainable_variables:
            fisher = self._fisher.get(keys[id(variable)])
            if fisher is None:
                continue
            current = variable[tuple(slice(0, n) for n in fisher.shape)]
            anchor = ops.convert_to_tensor(self._anchor[keys[id(variable)]])
            total = total + ops.sum(
                ops.convert_to_tensor(fisher) * ops.square(current - anchor)
            )
        return self.weight / 2.0 * total

    def end_stage(self, context):
        x, labels = context.data
        rng = np.random.default_rng([self.seed, context.stage])
        if labels.shape[0] > self.samples:
            chosen = rng.choice(labels.shape[0], self.samples, replace=False)
            x, labels = x[chosen], labels[chosen]
        variables = list(context.model.trainable_variables)
        fisher = _fisher_diagonal(context, variables, x, labels)
        keys = _keys(context.model)
        for variable, value in zip(variables, fisher, strict=True):
            key = keys[id(variable)]
            previous = self._fisher.get(key)
            if previous is not None:
                padded = np.zeros_like(value)
                padded[tuple(slice(0, n) for n in previous.shape)] = previous
                value = value + padded
            self._fisher[key] = value.astype("float32")
            self._anchor[key] = np.asarray(variable.numpy())

    def get_state(self):
        state = {f"fisher:{p}": v for p, v in self._fisher.items()}
        state.update({f"anchor:{p}": v for p, v in self._anchor.items()})
        return state

    def set_state(self, state):
        self._fisher = {
            k[len("fisher:") :]: np.asarray(v)
            for k, v in state.items()
            if k.startswith("fisher:")
        }
        self._anchor = {
            k[len("anchor:") :]: np.asarray(v)
            for k, v in state.items()
            if k.startswith("anchor:")
        }

    def check_state(self, model, head):
        """Checks the restored importances against `model`'s weights.

        Keys are positions in `model.weights`; states saved by version 0.1
        were keyed by variable path, which `load_model` changes for a
        Sequential model (`sequential/head/kernel` -> `head/kernel`): those
        are matched by path, with or without the model's prefix.
        """
        weights = list(model.weights)
        fisher, anchor = {}, {}
        for key, value in self._fisher.items():
            index = _index_of(key, weights)
            if index is None:
                raise ValueError(
                    f"EWC's saved importance '{key}' names no weight of "
                    f"model '{model.name}'; expected one per trainable "
                    "weight of the model it was saved with."
                )
            variable = weights[index]
            saved = self._anchor.get(key)
            if (
                saved is None
                or saved.shape != value.shape
                or value.ndim != len(variable.shape)
                or any(
                    s > v
                    for s, v in zip(value.shape, variable.shape, strict=True)
                )
            ):
                raise ValueError(
                    f"EWC's saved importance '{key}' has shape {value.shape}"
                    f" (anchor {None if saved is None else saved.shape}); "
                    f"expected a shape within weight '{variable.path}' of "
                    f"shape {tuple(variable.shape)}, with an anchor of the "
                    "same shape."
                )
            fisher[str(index)] = value
            anchor[str(index)] = saved
        self._fisher, self._anchor = fisher, anchor

    def get_config(self):
        return {
            "weight": self.weight,
            "samples": self.samples,
            "seed": self.seed,
        }


def _keys(model):
    """`id(variable) -> key`: the variable's position in `model.weights`,
    which saving and loading keep (unlike variable paths)."""
    return {id(v): str(i) for i, v in enumerate(model.weights)}


def _index_of(key, weights):
    if key.isdigit():
        index = int(key)
        return index if index < len(weights) else None
    for index, variable in enumerate(weights):
        path = variable.path
        if key == path or key.split("/", 1)[-1] == path:
            return index
        if path.split("/", 1)[-1] == key:
            return index
    return None


def _fisher_diagonal(context, variables, x, labels):
    """Mean squared per-sample gradient of the log-likelihood."""
    model, head = context.model, context.head

    def negative_log_likelihood(sample, label):
        logits = logits_of(head, model(sample, training=False))
        return keras.ops.sum(
            keras.losses.sparse_categorical_crossentropy(
                label, logits, from_logits=True
            )
        )

    gradients = gradient_function(negative_log_likelihood, variables)
    totals = [np.zeros(tuple(v.shape), dtype="float64") for v in variables]
    for i in range(labels.shape[0]):
        _, grads = gradients(x[i : i + 1], labels[i : i + 1])
        for total, grad in zip(totals, grads, strict=True):
            total += np.square(keras.ops.convert_to_numpy(grad))
    return [total / labels.shape[0] for total in totals]
