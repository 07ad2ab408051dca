"""The stage's loss: a strategy's terms installed on the model for one stage.

Keras calls `model.compute_loss(x, y, y_pred, sample_weight, training)` in
every train and test step; `install_loss` puts the strategy's terms there,
on the instance, for the stage only (`remove_loss` takes them out), so the
model's class and its saved file stay as they were.
"""

import keras

from keras_incremental.strategies.features import feature_extractor
from keras_incremental.strategies.strategy import observes
from keras_incremental.strategies.strategy import traces_step


def frozen_copy(model):
    """The model as it is now, frozen: the teacher for distillation."""
    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    teacher.trainable = False
    return teacher


def install_loss(model, strategy, context):
    """Puts the strategy's loss terms into `model.compute_loss`.

    Installed on the instance for the stage (Keras calls
    `compute_loss(x, y, y_pred, sample_weight, training)` in every train and
    test step), so the model class and its saved file stay as they were.
    Targets packed as `(labels, logits, mask)` are unpacked for the
    compiled loss and metrics.
    """
    if not strategy.needs_logits and not any(
        traces_step(p) for p in strategy.parts
    ):
        return
    base_loss = type(model).compute_loss
    extractor = None
    if observes(strategy):
        extractor = feature_extractor(model, context.head)

    def compute_loss(
        x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        labels = _labels(y)
        if training and extractor is not None:
            strategy.observe(
                context,
                keras.ops.stop_gradient(extractor(x, training=False)),
                labels,
                sample_weight,
            )
        if training:
            sample_weight = strategy.weigh(context, labels, sample_weight)
        loss = base_loss(
            model, x, labels, y_pred, sample_weight, training=training
        )
        if training:
            term = strategy.loss(context, x, y, y_pred)
            if term is not None:
                loss = loss + keras.ops.cast(term, loss.dtype)
        return loss

    model.compute_loss = compute_loss
    model.compute_metrics = _unpacking_metrics(model)


def unpack_targets(model):
    """Has `model`'s compiled loss and metrics read the labels of targets
    packed as `(labels, logits, mask)`, until `install_loss` (which also
    does) or `remove_loss`.

    `fit` on JAX and PyTorch builds the compiled loss and metrics on the
    first batch before any callback runs, so before the stage's loss is
    installed.
    """
    base_loss = type(model).compute_loss

    def compute_loss(
        x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        return base_loss(
            model, x, _labels(y), y_pred, sample_weight, training=training
        )

    model.compute_loss = compute_loss
    model.compute_metrics = _unpacking_metrics(model)


def _labels(y):
    """The labels of targets packed as `(labels, logits, mask)`, else `y`."""
    return y[0] if isinstance(y, tuple) else y


def _unpacking_metrics(model):
    """`model.compute_metrics` on the labels of packed targets."""
    base_metrics = type(model).compute_metrics

    def compute_metrics(x, y, y_pred, sample_weight=None):
        return base_metrics(model, x, _labels(y), y_pred, sample_weight)

    return compute_metrics


def remove_loss(model):
    for name in ("compute_loss", "compute_metrics"):
        if name in vars(model):
            delattr(model, name)
