"""The analytic head: ridge regression on fixed features, exact and
exemplar-free."""

import warnings

import keras
import numpy as np

from keras_incremental.strategies.features import feature_extractor
from keras_incremental.strategies.features import outputs
from keras_incremental.strategies.ridge import RidgeStatistics
from keras_incremental.strategies.ridge import pack_symmetric
from keras_incremental.strategies.ridge import packed_size
from keras_incremental.strategies.ridge import unpack_symmetric
from keras_incremental.strategies.strategy import Strategy
from keras_incremental.utils.checks import check_bool
from keras_incremental.utils.checks import check_number

# Samples per forward pass when the statistics are gathered: bounds the
# features held at once (`STATISTICS_BATCH` x width float32).
STATISTICS_BATCH = 1024
STATE_KEYS = ("gram", "cross", "counts", "regularization")


class Analytic(Strategy):
    """The head solved in closed form: ridge regression on fixed features.

    Over every stage it keeps the sufficient statistics of a ridge
    regression of one-hot targets on the head's inputs (with a constant
    feature for the bias), `G = sum(h^T h)` and `Q = sum(h^T y)`, in
    float64, and at each stage end sets the head to
    `W = (G + lambda I)^-1 Q`. Both are sums, so after any sequence of
    stages the head equals the ridge fit on all the data seen, jointly: it
    forgets nothing, stores no exemplar, and the head gets no gradient step
    and no optimizer state.

    The features must stay fixed for that to hold: the body below the head
    is frozen in every stage (a pretrained backbone, an adopted classifier's
    body, `RandomFeatures` on raw inputs). With `train_first_stage`, the
    run's first stage trains the whole model with gradients, as RanPAC's
    first phase; its features are then fixed for the rest of the run.

    A stage's statistics come from one forward pass (inference mode) over
    the stage's own samples when its `fit` ends, so one epoch is enough:
    more epochs only repeat forward passes of a fixed model. What `fit`
    reports (loss, accuracy) is the model before the stage's solve.

    Args:
        regularization: `"auto"` (lambda by generalized cross-validation on
            the statistics: no test data, no stored sample, and the same
            for the same data however it was split into stages) or a
            positive float, lambda itself. Defaults to `"auto"`.
        train_first_stage: Bool: train the whole model with gradients in the
            run's first stage (stage 0), then fix its body. Defaults to
            `False`: the body is fixed from the start.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((64,)),
        keras_incremental.layers.RandomFeatures(1024, seed=0),
        keras_incremental.ExpandableDense(0),
    ])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    inc = keras_incremental.IncrementalModel(model=model,
                                             strategy="analytic")
    xs, ys = inc.prepare(x, y)
    model.fit(xs, ys, epochs=1, callbacks=[inc])  # the head is solved
    ```
    """

    name = "analytic"
    remembers = True

    def __init__(self, regularization="auto", train_first_stage=False):
        if regularization != "auto":
            if isinstance(regularization, str):
                raise ValueError(
                    "Expected `regularization` to be 'auto' or a positive "
                    f"number. Received: regularization={regularization!r}"
                )
            regularization = check_number(
                regularization,
                "regularization",
                minimum=0.0,
                include_minimum=False,
            )
        self.regularization = regularization
        self.train_first_stage = check_bool(
            train_first_stage, "train_first_stage"
        )
        # `None` until a stage ended, `remember` took samples or a head
        # was adopted: the features may still train (`train_first_stage`).
        self.statistics = None
        self.lam = None

    @property
    def trains_head(self):
        return self.train_first_stage and self.statistics is None

    @property
    def trains_body(self):
        return self.trains_head

    def adopt(self, context):
        # An adopted body was trained elsewhere: fixed from the start.
        self._statistics(context.head).grow(context.head.units)

    def end_stage(self, context):
        self._learn(context, *context.read_data())

    def remember(self, context, x, labels):
        """Adds the samples' statistics and solves the head again: after
        `adopt`, `inc.remember(x_old, y_old)` with all the old samples makes
        the head the ridge fit on them (one forward pass, nothing stored
        but the statistics).

        Args:
            context: A `StageContext` of the run's last finished stage.
            x: The samples, a NumPy array of the model's input shape.
            labels: Their class indices, 1-D.
        """
        self._learn(context, x, labels)

    def _learn(self, context, x, labels):
        """Adds the statistics of `(x, labels)` on a copy and solves the
        head on it; the copy is kept only when the solve succeeds."""
        statistics = self._statistics(context.head).copy()
        statistics.grow(context.head.units)
        _add_samples(statistics, context.model, context.head, x, labels)
        self._solve(context.head, statistics)

    def _statistics(self, head):
        if head.bias is None:
            raise ValueError(
                "The analytic head solves a kernel and a bias; expected a "
                f"head with `use_bias=True`. Received the head '{head.name}' "
                "without a bias. Nothing was changed."
            )
        if self.statistics is None:
            self.statistics = RidgeStatistics(_feature_width(head))
        return self.statistics

    def _solve(self, head, statistics):
        """Sets the head to the ridge fit on `statistics` (then kept)."""
        try:
            kernel, bias, lam = statistics.solve(self.regularization)
        except np.linalg.LinAlgError as error:
            raise ValueError(
                f"The analytic head's statistics cannot be solved ({error}); "
                "expected statistics of samples. Nothing was changed."
            ) from error
        if not (np.all(np.isfinite(kernel)) and np.all(np.isfinite(bias))):
            raise ValueError(
                "The analytic head's solve gives non-finite weights; "
                "expected finite features and statistics. Nothing was "
                "changed."
            )
        seen = statistics.counts > 0
        if not np.all(seen):
            # No sample of these classes (adopted, nothing remembered):
            # their columns stay as they were.
            missing = int(np.sum(~seen))
            warnings.warn(
                f"The analytic head has no samples of {missing} of its "
                f"{len(seen)} classes (adopted without "
                "`inc.remember(x_old, y_old)`); their columns keep their "
                "weights, and the head is not the joint fit on them.",
                stacklevel=3,
            )
        units = head.units
        new_kernel = keras.ops.convert_to_numpy(head.kernel).copy()
        new_bias = keras.ops.convert_to_numpy(head.bias).copy()
        columns = np.flatnonzero(seen[:units])
        new_kernel[:, columns] = kernel[:, columns]
        new_bias[columns] = bias[columns]
        head.kernel.assign(new_kernel)
        head.bias.assign(new_bias)
        self.statistics, self.lam = statistics, lam

    def get_state(self):
        if self.statistics is None:
            return {}
        statistics = self.statistics
        return {
            "gram": pack_symmetric(statistics.gram),
            "cross": statistics.cross.copy(),
            "counts": statistics.counts.copy(),
            "regularization": np.asarray(
                [np.nan if self.lam is None else self.lam]
            ),
        }

    def set_state(self, state):
        if not state:
            self.statistics, self.lam = None, None
            return
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(
                f"the analytic head's statistics lack {missing}; expected "
                f"all of {list(STATE_KEYS)}"
            )
        cross = np.asarray(state["cross"], dtype="float64")
        size = cross.shape[0]
        gram = np.asarray(state["gram"], dtype="float64")
        if gram.shape != (packed_size(size),):
            raise ValueError(
                f"the packed G has shape {gram.shape}; expected "
                f"{(packed_size(size),)} for {size} features"
            )
        self.statistics = RidgeStatistics(
            size - 1,
            unpack_symmetric(gram, size),
            cross,
            np.asarray(state["counts"], dtype="float64"),
        )
        lam = float(np.asarray(state["regularization"]).reshape(-1)[0])
        self.lam = None if np.isnan(lam) else lam

    def check_state(self, model, head):
        if self.statistics is None:
            return
        width = _feature_width(head)
        if self.statistics.features != width:
            raise ValueError(
                "the analytic head's statistics are of "
                f"{self.statistics.features} features; expected {width}, "
                f"the input width of the head '{head.name}'"
            )
        if self.statistics.classes != head.units:
            raise ValueError(
                "the analytic head's statistics are of "
                f"{self.statistics.classes} classes; expected {head.units}, "
                f"the units of the head '{head.name}'"
            )
        self.statistics.check("the analytic head's statistics")

    def state_shapes(self, model, head):
        size = _feature_width(head) + 1
        return {
            "gram": (packed_size(size),),
            "cross": (size, head.units),
            "counts": (head.units,),
            "regularization": (1,),
        }

    def get_config(self):
        return {
            "regularization": self.regularization,
            "train_first_stage": self.train_first_stage,
        }


def _feature_width(head):
    """The width of the head's inputs (its kernel's rows)."""
    return int(head.kernel.shape[0])


def _add_samples(statistics, model, head, x, labels):
    """Adds the statistics of `(x, labels)`: features of the head's inputs
    in inference mode, in batches of `STATISTICS_BATCH`."""
    extractor = feature_extractor(model, head)
    labels = np.asarray(labels, dtype="int64").reshape(-1)
    for start in range(0, len(labels), STATISTICS_BATCH):
        stop = start + STATISTICS_BATCH
        features = outputs(extractor, x[start:stop], STATISTICS_BATCH)
        if features.ndim != 2:
            raise ValueError(
                "The analytic head needs one feature vector per sample; "
                f"the head '{head.name}' gets inputs of shape "
                f"{features.shape[1:]} per sample. Expected a head on "
                "rank-2 inputs (batch, features)."
            )
        statistics.add(features, labels[start:stop])
