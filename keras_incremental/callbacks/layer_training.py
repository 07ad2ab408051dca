"""What each layer trains in a stage: freezing and per-layer learning rates."""

import keras

from keras_incremental import compat
from keras_incremental.models.freezing import layers_to_freeze
from keras_incremental.optimizers.learning_rates import base_learning_rate
from keras_incremental.optimizers.learning_rates import multiplier_optimizer
from keras_incremental.optimizers.learning_rates import plan_groups
from keras_incremental.optimizers.learning_rates import rebuild_optimizer
from keras_incremental.optimizers.learning_rates import update_multipliers
from keras_incremental.optimizers.multiplier_optimizer import (
    MultiplierOptimizer,
)
from keras_incremental.optimizers.slots import leaf_optimizers


class LayerTraining:
    """Applies a stage's `freeze` and `learning_rates` to the model.

    It remembers the layers it froze (to unfreeze them when `freeze`
    changes) and the learning-rate groups in use with their base rate,
    which the run state saves.

    Args:
        groups: The groups in use (multiplier -> layer paths), or `None`.
        base_rate: Their base learning rate, or `None`.

    Example:

    ```python
    training = LayerTraining()
    training.apply(model, head, freeze="backbone", learning_rates=None)
    ```
    """

    def __init__(self, groups=None, base_rate=None):
        self.frozen = []
        # Whether `frozen` holds the head for a strategy that sets it.
        self.head_frozen = False
        # The layers below the head that `frozen` holds for a strategy that
        # keeps the body fixed (`Strategy.trains_body`), not for `freeze`.
        self.body_frozen = False
        self.groups = groups
        self.base_rate = base_rate

    def apply(
        self,
        model,
        head,
        freeze,
        learning_rates,
        train_head=True,
        train_body=True,
    ):
        """Freezes and slows the layers for the stage about to train.

        Args:
            model: The model about to train a stage.
            head: Its `ExpandableDense`.
            freeze: The `freeze` option.
            learning_rates: The `learning_rates` option.
            train_head: `False` to freeze the head too, for a strategy that
                sets its weights itself (`Strategy.trains_head`).
            train_body: `False` to freeze every layer below the head, for
                a strategy that keeps the features fixed
                (`Strategy.trains_body`).
        """
        self.apply_freezing(model, head, freeze, train_head, train_body)
        self.apply_learning_rates(model, learning_rates)

    def apply_freezing(
        self, model, head, freeze, train_head=True, train_body=True
    ):
        frozen = layers_to_freeze(model, head, freeze)
        self.body_frozen = False
        if not train_body:
            # Not the layers the user made non-trainable: the stage that
            # trains the body again must leave those as they are.
            body = [
                layer
                for layer in layers_to_freeze(model, head, "backbone")
                if layer not in frozen
                and (layer.trainable or layer in self.frozen)
            ]
            self.body_frozen = bool(body)
            frozen = [*frozen, *body]
        self.head_frozen = not train_head and head not in frozen
        if self.head_frozen:
            frozen = [*frozen, head]
        for layer in self.frozen:
            if layer not in frozen:
                layer.trainable = True
        for layer in frozen:
            layer.trainable = False
        self.frozen = frozen
        optimizer = model.optimizer
        if optimizer is not None and optimizer.built:
            unknown = [
                v
                for v in model.trainable_variables
                if not any(
                    compat.optimizer_knows(o, v)
                    for o in leaf_optimizers(optimizer)
                )
            ]
            # JAX and PyTorch apply an optimizer to exactly the variables it
            # was built on: a smaller trainable set needs a rebuild too
            # (the frozen variables' slots then start afresh when they are
            # unfrozen). TensorFlow applies it to any subset.
            shrunk = keras.backend.backend() != "tensorflow" and len(
                model.trainable_variables
            ) != sum(
                compat.optimizer_variable_count(o)
                for o in leaf_optimizers(optimizer)
            )
            if unknown or shrunk:
                # Rebuild it on the current trainable variables, with the
                # state of the known ones kept.
                clone = type(optimizer).from_config(optimizer.get_config())
                rebuild_optimizer(model, clone)

    def apply_learning_rates(self, model, learning_rates):
        if not learning_rates:
            return
        groups = plan_groups(model, learning_rates)
        optimizer = model.optimizer
        if not update_multipliers(optimizer, groups):
            if isinstance(
                optimizer, keras.optimizers.MultiOptimizer
            ) and not isinstance(optimizer, MultiplierOptimizer):
                # Saved before `MultiplierOptimizer`: no base rate of its own.
                base = self.base_rate
            else:
                base = None
            if base is None:
                base = base_learning_rate(optimizer)
            self.base_rate = base
            rebuild_optimizer(
                model, multiplier_optimizer(optimizer, base, groups)
            )
        elif self.base_rate is None:
            # A model compiled with a `MultiplierOptimizer`: the checkpoint
            # saves its base rate beside the groups.
            self.base_rate = base_learning_rate(optimizer)
        self.groups = groups
