import functools
import numbers
import os

import keras
import numpy as np
import tensorflow as tf

from keras_incremental import checkpoint as checkpoints
from keras_incremental import compat
from keras_incremental import metrics
from keras_incremental import strategies
from keras_incremental.checks import check_unit_count
from keras_incremental.freezing import check_freeze_spec
from keras_incremental.freezing import layers_to_freeze
from keras_incremental.growth import expand
from keras_incremental.growth import find_head
from keras_incremental.growth import resize_lazy_metrics
from keras_incremental.growth import traced_variables
from keras_incremental.labels import LabelEncoder
from keras_incremental.labels import labels_from_onehot
from keras_incremental.learning_rates import base_learning_rate
from keras_incremental.learning_rates import check_learning_rates
from keras_incremental.learning_rates import leaf_optimizers
from keras_incremental.learning_rates import multiplier_optimizer
from keras_incremental.learning_rates import plan_groups
from keras_incremental.learning_rates import rebuild_optimizer
from keras_incremental.memory import ExemplarMemory
from keras_incremental.serving import export_for_serving
from keras_incremental.strategies import StageContext
from keras_incremental.strategies.features import feature_extractor
from keras_incremental.strategies.features import outputs
from keras_incremental.targets import encode_targets
from keras_incremental.targets import label_format


class IncrementalModel(keras.callbacks.Callback):
    """Staged class-incremental training inside `model.fit`.

    Each call of `model.fit(..., callbacks=[inc])` is one stage. Before it,
    `inc.prepare(x, y)` learns the class names the stage brings (labels of any
    hashable kind: ints, strings, bytes; indices are stable and append-only,
    see `classes_`) and returns the data ready for `fit`: labels encoded for
    the compiled loss (class indices for sparse losses, one-hot of the grown
    width for categorical ones) and, when a memory is configured, exemplars of
    the earlier classes mixed in. During `fit` the callback grows the head by
    the number of new classes, freezes the layers asked for and applies the
    per-layer learning rates; at the end of the stage it updates the memory
    and writes the checkpoint.

    One instance serves every stage; its options are attributes that may be
    changed between stages (freeze more, unfreeze, change multipliers).

    Args:
        model: Optional Keras model with an `ExpandableDense` head. Without
            it, the model is known from the first `fit`; until then `prepare`
            returns class indices. Defaults to `None`.
        strategy: How to fight forgetting: a name from
            `keras_incremental.strategies.NAMED` (`"finetune"`, `"replay"`,
            `"lwf"`, `"icarl"`, `"ewc"`, `"wa"`, `"der++"`, `"default"`) or a
            `keras_incremental.strategies.Strategy` object. Defaults to
            `None`, the best measured: `"default"` (replay with a
            class-balanced loss, distillation and weight aligning).
        memory_size: Non-negative integer, the total exemplar budget over all
            classes; 0 keeps none. Defaults to `0`.
        checkpoint: Path of the stage checkpoint, a `.keras` file written
            after every stage (its folder made when missing), or `None` for
            none. Defaults to `None`.
        head: Name of the `ExpandableDense` to grow, or `None` for the last
            one of the model. Defaults to `None`.
        freeze: Layers not to train this stage: `None`, `"backbone"` (all
            but the head), a layer name or regular expression, a list of
            them, or a callable `layer -> bool`. Defaults to `None`.
        learning_rates: Optional dict mapping a layer name or regular
            expression to a learning-rate multiplier (> 0), applied through a
            `keras.optimizers.MultiOptimizer` whose state carries over between
            stages. Defaults to `None`.
        seed: Integer seed for exemplar selection and shuffling. Defaults to
            `0`.
        evaluation: Optional `(x_test, y_test)` with class labels as given
            to `prepare`. After each stage the samples of the classes seen so
            far are classified (`inc.predict`) and the accuracy on each
            stage's classes is recorded in `history_`, giving the accuracy
            matrix, forgetting and backward transfer (`metrics()`). Defaults
            to `None`.
        report: Optional path of a JSON report written after each stage
            (the `metrics()` of the run and its history); with matplotlib
            installed, a plot of accuracy per stage is written beside it
            (same name, `.png`). Defaults to `None`.
        export_dir: Optional folder: each finished stage is exported there
            for TensorFlow Serving as the next version
            (`export_for_serving`, with the class names). Defaults to
            `None`.

    Example:

    ```python
    inc = keras_incremental.IncrementalModel(
        memory_size=200, checkpoint="run/stages.keras"
    )
    for x, y in stages:
        xs, ys = inc.prepare(x, y)
        model.fit(xs, ys, epochs=5, callbacks=[inc])
    names = inc.decode(model.predict(x_test).argmax(-1))
    model, inc = keras_incremental.IncrementalModel.restore(
        "run/stages.keras"
    )
    ```
    """

    def __init__(
        self,
        model=None,
        strategy=None,
        memory_size=0,
        checkpoint=None,
        head=None,
        freeze=None,
        learning_rates=None,
        seed=0,
        evaluation=None,
        report=None,
        export_dir=None,
    ):
        super().__init__()
        self.strategy = strategies.get(strategy)
        self.memory_size = check_unit_count(memory_size, "memory_size", 0)
        if checkpoint is not None:
            checkpoint = checkpoints.check_checkpoint_path(checkpoint)
        self.checkpoint = checkpoint
        if head is not None and not isinstance(head, str):
            raise TypeError(
                "Expected `head` to be a layer name or None. "
                f"Received: head={head!r}"
            )
        self.head = head
        check_freeze_spec(freeze)
        self.freeze = freeze
        check_learning_rates(learning_rates)
        self.learning_rates = learning_rates
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"Expected an integer seed. Received: {seed!r}")
        self.seed = int(seed)
        self.evaluation = _check_evaluation(evaluation)
        self.report = _check_path(report, "report", ".json")
        self.export_dir = _check_path(export_dir, "export_dir")
        self.history_ = []
        self.stage_classes_ = []
        self.encoder = LabelEncoder()
        self.memory = ExemplarMemory(
            self.memory_size,
            selection=self.strategy.selection or "random",
            seed=self.seed,
        )
        self.stage_ = 0
        self._context = None
        self._stage_labels = None
        self._stage_data = None
        self._frozen = []
        self._groups = None
        self._teacher = None
        # The train and test functions of the last stage, with what they
        # were traced against: the next stage reuses them when that is
        # unchanged, rather than paying for a retrace.
        self._stage_functions = None
        self._trace_key = None
        if model is not None:
            find_head(model, head)
            self.set_model(model)

    @property
    def classes_(self):
        """The class names learned so far; index `i` is output unit `i`."""
        return list(self.encoder.classes_)

    def _known_model(self):
        try:
            return self.model
        except AttributeError:
            return None

    def prepare(self, x, y=None):
        """Learns a stage's new classes and returns `(x, y)` for `model.fit`.

        Args:
            x: Inputs as a NumPy array (first axis the samples), or a
                `tf.data.Dataset` of `(x, y)` elements, batched or not (then
                `y` is left `None`).
            y: The class labels: a 1-D array or list of ints, strings or
                bytes, or a 2-D one-hot array. `None` with a dataset.

        Returns:
            `(x, y)` for `model.fit` with arrays, or `(dataset, None)` with a
            dataset; labels encoded as the compiled loss expects, exemplars of
            earlier classes mixed in when the strategy replays. With logit
            replay (`"der++"`), `y` is `(labels, logits, mask)`, which the
            loss installed for the stage reads.

        Raises:
            ValueError: for an empty stage, x/y of different lengths,
                non-finite inputs, `None` labels, 2-D labels that are not
                one-hot, samples shaped unlike the memory's exemplars, or a
                dataset for a strategy that needs arrays. Nothing is
                changed.
            TypeError: for labels mixing types. Nothing is changed.
        """
        model = self._known_model()
        if model is not None:
            self._check_options(model)
        if isinstance(x, tf.data.Dataset):
            if self.strategy.needs_arrays:
                raise ValueError(
                    f"The strategy {self.strategy.name!r} needs the stage as "
                    "NumPy arrays in `prepare` (to replay stored logits or "
                    "estimate weight importances). Received a "
                    "`tf.data.Dataset`; pass arrays or pick another strategy."
                )
            if y is not None:
                raise ValueError(
                    "With a `tf.data.Dataset`, labels come from its (x, y) "
                    "elements; expected `y=None`. Received a `y` as well."
                )
            self._check_sample_shape(x.element_spec[0].shape, dataset=True)
            return self._prepare_dataset(x), None
        x, labels = self._check_arrays(x, y)
        self._check_sample_shape(x.shape[1:])
        self.encoder.partial_fit(
            np.unique(labels) if _sortable(labels) else labels
        )
        indices = self.encoder.transform(labels)
        self._stage_data = (x, indices)
        self._stage_labels = indices
        fmt, width = self._target_spec()
        # Logit replay reads the stored logits beside the labels (zeros,
        # masked out, for the stage's own samples); the loss installed for
        # the stage unpacks them.
        packed = self.strategy.needs_logits
        if packed:
            logits = np.zeros((len(indices), width), dtype="float32")
            mask = np.zeros_like(logits)
        x_old, y_old = self._replay_samples()
        if y_old is not None and len(y_old):
            x = np.concatenate([x, x_old.astype(x.dtype)], axis=0)
            indices = np.concatenate([indices, y_old], axis=0)
            order = np.random.default_rng([self.seed, self.stage_]).permutation(
                len(indices)
            )
            x, indices = x[order], indices[order]
            if packed:
                old_logits, old_mask = self.memory.logit_targets(width)
                logits = np.concatenate([logits, old_logits], axis=0)[order]
                mask = np.concatenate([mask, old_mask], axis=0)[order]
        targets = encode_targets(indices, fmt, width)
        if packed:
            return x, (targets, logits, mask)
        return x, targets

    def decode(self, indices):
        """Maps class indices (e.g. `predict(x).argmax(-1)`) to class names."""
        return self.encoder.inverse_transform(np.asarray(indices))

    def _check_arrays(self, x, y):
        if y is None:
            raise ValueError(
                "Expected labels `y` with array inputs. Received: y=None"
            )
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as error:
            raise TypeError(
                f"Expected `x` to be an array of inputs ({error})."
            ) from error
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(
                "Received an empty stage; expected at least one sample. "
                f"Received: x.shape={x.shape}"
            )
        labels = np.asarray(y, dtype=object) if isinstance(y, list) else y
        labels = np.asarray(labels)
        if labels.ndim == 2:
            labels = labels_from_onehot(labels)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(
                "Expected as many labels as samples. Received: "
                f"{x.shape[0]} samples in x and {labels.shape[0]} labels in y"
            )
        if np.issubdtype(x.dtype, np.number) and not np.all(np.isfinite(x)):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise ValueError(
                f"Received {bad} NaN or infinite values in x; expected finite "
                "inputs. Clean or impute them before `prepare`."
            )
        return x, labels

    def _check_sample_shape(self, shape, dataset=False):
        """Stage samples must match the stored exemplars' shape."""
        x_old, _ = self.memory.samples()
        if x_old is None or not self.strategy.replay:
            return
        expected = tuple(x_old.shape[1:])
        received = tuple(shape)
        if dataset and len(received) == len(expected) + 1:
            received = received[1:]  # a batched dataset
        if len(received) != len(expected) or any(
            r is not None and r != e
            for r, e in zip(received, expected, strict=True)
        ):
            raise ValueError(
                "Expected samples shaped like the exemplars in memory, "
                f"{expected}. Received samples of shape {received}. "
                "Nothing was changed."
            )

    def _target_spec(self):
        """The label format the compiled loss wants, and the one-hot width."""
        model = self._known_model()
        fmt = label_format(model) if model is not None else "sparse"
        width = len(self.encoder.classes_)
        if model is not None:
            width = max(width, find_head(model, self.head).units)
        return fmt, width

    def _replay_samples(self):
        if not self.strategy.replay or not len(self.memory):
            return None, None
        return self.memory.samples()

    def _prepare_dataset(self, dataset):
        batches = [
            _flat_labels(y)
            for y in dataset.map(lambda x, y: y).as_numpy_iterator()
        ]
        labels = np.concatenate(batches) if batches else np.zeros((0,))
        if labels.size == 0:
            raise ValueError(
                "Received an empty dataset; expected at least one element."
            )
        labels = np.asarray(_text(labels.tolist()))
        self.encoder.partial_fit(
            np.unique(labels) if _sortable(labels) else labels
        )
        classes = self.encoder.classes_
        keys = tf.constant(classes)
        if keys.dtype.is_integer:
            # TensorFlow has int64 -> int64 tables only, not int32 ones.
            keys = tf.cast(keys, tf.int64)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                keys, tf.range(len(classes), dtype=tf.int64)
            ),
            default_value=-1,
        )
        fmt, width = self._target_spec()
        key_dtype = keys.dtype

        label_spec = dataset.element_spec[1]
        one_hot = label_spec.shape.rank == 2 and label_spec.shape[-1] != 1

        def encode(x, y):
            if one_hot:  # batched one-hot rows: their column is the label
                y = tf.argmax(y, axis=-1)
            index = table.lookup(tf.cast(y, key_dtype))
            if fmt == "categorical":
                return x, tf.one_hot(index, width)
            return x, index

        self._stage_data = dataset
        self._stage_labels = self.encoder.transform(labels)
        prepared = dataset.map(encode)
        x_old, y_old = self._replay_samples()
        if y_old is not None and len(y_old):
            x_dtype = dataset.element_spec[0].dtype.as_numpy_dtype
            replay = tf.data.Dataset.from_tensor_slices(
                (x_old.astype(x_dtype), encode_targets(y_old, fmt, width))
            ).shuffle(len(y_old), seed=self.seed + self.stage_)
            if dataset.element_spec[0].shape.rank == x_old.ndim:
                prepared = _append_replay(prepared, replay, len(batches))
            else:
                # Unbatched: the exemplars are interleaved at random, so that
                # the last steps of an epoch are not all old classes.
                prepared = tf.data.Dataset.sample_from_datasets(
                    [prepared, replay],
                    weights=[float(len(labels)), float(len(y_old))],
                    seed=self.seed + self.stage_,
                    stop_on_empty_dataset=False,
                ).apply(
                    tf.data.experimental.assert_cardinality(
                        len(labels) + len(y_old)
                    )
                )
        return prepared

    def _check_options(self, model):
        check_freeze_spec(self.freeze)
        check_learning_rates(self.learning_rates)
        head = find_head(model, self.head)
        layers_to_freeze(model, head, self.freeze)
        if self.learning_rates:
            plan_groups(model, self.learning_rates)

    def on_train_begin(self, logs=None):
        model = self.model
        self._check_options(model)
        # A `fit` that failed never reached `on_train_end`: drop what its
        # stage installed before this one starts.
        _remove_loss(model)
        self._context = None
        head = find_head(model, self.head)
        # The stage's functions see the head's width as free, so that they
        # stay valid when it grows in place next stage; unless a compiled
        # metric still to be built might size itself from it.
        head._free_width = compat.compiled_metrics_allow_free_width(model)
        old_units = head.units
        teacher = None
        if self.strategy.needs_teacher:
            # At the first stage too, with no class yet: its outputs are
            # empty, and the stage's train function then serves later ones.
            teacher = self._refresh_teacher(model)
        optimizer = model.optimizer
        if optimizer is not None and not optimizer.built:
            # Built now, not in the first traced step: its slots for the
            # head then grow with it, in place, before anything is traced.
            with compat.variable_scope_of(head.kernel):
                optimizer.build(model.trainable_variables)
        missing = len(self.encoder.classes_) - head.units
        if missing > 0:
            expand(model, missing, layer=head)
        # The classes no earlier finished stage brought (also those a failed
        # `fit` of this stage already grew the head for).
        recorded = {i for group in self.stage_classes_ for i in group}
        self._new_classes = [i for i in range(head.units) if i not in recorded]
        self._apply_freezing(model, head)
        self._apply_learning_rates(model)
        data = self._stage_data
        self._context = StageContext(
            model=model,
            head=head,
            stage=self.stage_,
            old_units=old_units,
            teacher=teacher,
            memory=self.memory,
            data=data if isinstance(data, tuple) else None,
            replayed=self._replay_samples()[1],
            labels=self._stage_labels,
        )
        self.strategy.begin_stage(self._context)
        _install_loss(model, self.strategy, self._context)
        # Metrics that size themselves inside the first traced step would
        # see the free width: size them now.
        resize_lazy_metrics(model, head)
        self._use_stage_functions(model, head, teacher)

    def _refresh_teacher(self, model):
        """The teacher: the model as it is now, frozen, outside the model.

        One copy serves the whole run: it grows with the model and takes its
        weights at each stage, in place, so the stage's train function can
        be reused. A new copy is made when the model's layout changed.
        """
        teacher = self._teacher
        if teacher is not None:
            teacher_head = find_head(teacher, self.head)
            missing = find_head(model, self.head).units - teacher_head.units
            if missing >= 0:
                teacher_head.expand(missing)
            weights = model.get_weights()
            if [w.shape for w in weights] != [
                tuple(v.shape) for v in teacher.weights
            ]:
                teacher = None
            else:
                teacher.set_weights(weights)
        if teacher is None:
            teacher = _frozen_copy(model)
            find_head(teacher, self.head)._free_width = True
        self._teacher = teacher
        return teacher

    def _stage_key(self, model, head, teacher):
        """What the stage's train function is traced against."""
        return (
            self.strategy.trace_signature(self._context),
            head._free_width,
            compat.compile_identity(model),
            compat.backend_variable_ids(model.trainable_variables),
            traced_variables(model),
            compat.backend_variable_ids(teacher.weights) if teacher else (),
        )

    def _use_stage_functions(self, model, head, teacher):
        """Reuses the last stage's train and test functions where they are
        still valid, and has them made anew otherwise."""
        key = self._stage_key(model, head, teacher)
        if self._stage_functions is not None and key == self._trace_key:
            model.train_function, model.test_function = self._stage_functions
            return
        self._stage_functions = None
        compat.remake_compiled_functions(model)

    def _apply_freezing(self, model, head):
        frozen = layers_to_freeze(model, head, self.freeze)
        for layer in self._frozen:
            if layer not in frozen:
                layer.trainable = True
        for layer in frozen:
            layer.trainable = False
        self._frozen = frozen
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
            if unknown:
                # Unfrozen variables the optimizer never saw: rebuild it on
                # the current ones, with the state of the known ones kept.
                clone = type(optimizer).from_config(optimizer.get_config())
                rebuild_optimizer(model, clone)

    def _apply_learning_rates(self, model):
        if not self.learning_rates:
            return
        groups = plan_groups(model, self.learning_rates)
        optimizer = model.optimizer
        if self._groups is not None and _same_paths(self._groups, groups):
            for multiplier, sub in self._sub_optimizers(optimizer, groups):
                sub.learning_rate = self._base_rate * multiplier
            self._groups = groups
            return
        template = optimizer
        if isinstance(optimizer, keras.optimizers.MultiOptimizer):
            template = optimizer.optimizers[-1]
            base = self._base_rate
        else:
            base = base_learning_rate(optimizer)
        self._base_rate = base
        rebuild_optimizer(model, multiplier_optimizer(template, base, groups))
        self._groups = groups

    def _sub_optimizers(self, optimizer, groups):
        model = self.model
        for multiplier, names in groups.items():
            variable = model.get_layer(names[0]).weights[0]
            for sub in optimizer.optimizers:
                if sub.built and compat.optimizer_knows(sub, variable):
                    yield multiplier, sub

    def on_train_end(self, logs=None):
        model = self.model
        # Kept for the next stage, with what they were traced against (the
        # metric variables the first step made included); the model gets
        # plain functions (traced with its width stated) in between.
        head = find_head(model, self.head)
        if self._context is not None:
            self._trace_key = self._stage_key(
                model, head, self._context.teacher
            )
            self._stage_functions = (model.train_function, model.test_function)
        head._free_width = False
        _remove_loss(model)
        compat.remake_compiled_functions(model)
        context = self._context
        if context is not None:
            self.strategy.end_stage(context)
            context.teacher = None
        self._update_memory()
        self.stage_classes_.append(getattr(self, "_new_classes", []))
        self._record_stage()
        self.stage_ += 1
        # The checkpoint first: a failing report or export must not cost
        # the stage.
        if self.checkpoint is not None:
            checkpoints.write_checkpoint(
                self.checkpoint,
                self.model,
                self.state(),
                self.memory if self.memory_size else None,
                self.strategy.get_state(),
            )
        if self.report is not None:
            self._write_report()
        if self.export_dir is not None:
            export_for_serving(
                self.model, self.export_dir, class_names=self.classes_
            )

    def predict(self, x, batch_size=None):
        """Class indices for `x`: the head's argmax, or the strategy's own
        classifier where it has one (iCaRL's nearest mean of exemplars).

        Args:
            x: Inputs, as for `model.predict`.
            batch_size: Passed to `model.predict`. Defaults to `None`.

        Returns:
            1-D integer array of class indices; `decode` maps them to names.
        """
        model = self._known_model()
        if model is None:
            raise ValueError(
                "No model yet: pass `model=` to `IncrementalModel` or train "
                "a stage with `fit(..., callbacks=[inc])` first."
            )
        context = self._context or StageContext(
            model=model,
            head=find_head(model, self.head),
            stage=self.stage_,
            old_units=0,
            memory=self.memory,
        )
        indices = self.strategy.predict(context, x)
        if indices is None:
            indices = np.argmax(outputs(model, x, batch_size), axis=-1)
        return np.asarray(indices, dtype="int64")

    def _record_stage(self):
        """Accuracy on each stage's classes, for the accuracy matrix."""
        entry = {
            "stage": self.stage_,
            "classes": [
                _plain(self.encoder.classes_[i])
                for i in self.stage_classes_[-1]
            ],
        }
        if self.evaluation is not None:
            x_test, labels = self.evaluation
            known = {c: i for i, c in enumerate(self.encoder.classes_)}
            seen = np.asarray([_plain(label) in known for label in labels])
            groups = [g for g in self.stage_classes_ if g]
            if seen.any() and groups:
                truth = np.asarray(
                    [known[_plain(label)] for label in labels[seen]]
                )
                predicted = self.predict(x_test[seen])
                row, overall = metrics.stage_accuracies(
                    truth, predicted, groups
                )
                row = iter(row)
                entry["row"] = [
                    next(row) if g else float("nan")
                    for g in self.stage_classes_
                ]
                entry["accuracy"] = overall
            else:
                # No class of a stage in the test data yet: a row all the
                # same, so that the accuracy matrix stays square.
                entry["row"] = [float("nan")] * len(self.stage_classes_)
                entry["accuracy"] = float("nan")
        self.history_.append(entry)

    def metrics(self):
        """The run's continual metrics so far, from `evaluation` data.

        Returns:
            A dict: `accuracy_matrix` (row i: accuracy on each stage's
            classes after stage i), `final_accuracy`,
            `average_incremental_accuracy`, `forgetting`,
            `backward_transfer`, `stage_accuracy`; empty without
            evaluation data.
        """
        rows = [h["row"] for h in self.history_ if "row" in h]
        if not rows or len(rows) != len(self.history_):
            return {}
        overall = [h["accuracy"] for h in self.history_]
        return metrics.summarize(metrics.accuracy_matrix(rows), overall)

    def _write_report(self):
        report = {
            "strategy": self.strategy.name,
            "classes": [_plain(c) for c in self.encoder.classes_],
            **self.metrics(),
            "history": self.history_,
        }
        metrics.write_report(report, self.report)
        curve = [h["accuracy"] for h in self.history_ if "accuracy" in h]
        if curve:
            try:
                metrics.plot_accuracy(
                    {self.strategy.name: curve},
                    os.path.splitext(self.report)[0] + ".png",
                )
            except ImportError:
                pass  # matplotlib is an optional extra

    def _update_memory(self):
        data = self._stage_data
        self._stage_data = None
        if data is None or not self.memory_size:
            return
        model = self.model
        head = find_head(model, self.head)
        self.memory.selection = self.strategy.selection or "random"
        embed = predict = None
        if self.strategy.selection == "herding":
            extractor = feature_extractor(model, head)
            embed = functools.partial(outputs, extractor)
        if self.strategy.needs_logits:
            predict = functools.partial(outputs, model)
        if isinstance(data, tf.data.Dataset):
            data = _dataset_arrays(data, self.encoder)
        self.memory.update(*data, embed=embed, predict=predict)

    def state(self):
        """The run's state for the checkpoint, as a JSON-able dict."""
        freeze = self.freeze if not callable(self.freeze) else None
        return {
            "stage": self.stage_,
            "encoder": self.encoder.to_config(),
            "settings": {
                "strategy": strategies.serialize(self.strategy),
                "memory_size": self.memory_size,
                "checkpoint": self.checkpoint,
                "head": self.head,
                "freeze": list(freeze) if isinstance(freeze, tuple) else freeze,
                "learning_rates": self.learning_rates,
                "seed": self.seed,
                "report": self.report,
                "export_dir": self.export_dir,
            },
            "history": self.history_,
            "stage_classes": self.stage_classes_,
            "groups": None
            if self._groups is None
            else {str(m): p for m, p in self._groups.items()},
            "base_rate": getattr(self, "_base_rate", None),
        }

    @classmethod
    def restore(cls, path, strategy=None):
        """Loads a stage checkpoint, ready for the next stage.

        Args:
            path: A checkpoint written by `IncrementalModel(checkpoint=...)`.
            strategy: Optional strategy (name or object) to go on with
                instead of the saved one; needed when the run used strategy
                parts of your own, which the checkpoint names but cannot
                rebuild. Defaults to `None`, the saved strategy.

        Returns:
            `(model, inc)`: the model with its optimizer state, and an
            `IncrementalModel` with the class names, memory, stage number and
            settings of the run.
        """
        model, state, memory, arrays = checkpoints.read_checkpoint(
            path, ExemplarMemory
        )
        settings = dict(state["settings"])
        settings["strategy"] = (
            strategies.deserialize(settings["strategy"])
            if strategy is None
            else strategy
        )
        settings["checkpoint"] = checkpoints.check_checkpoint_path(path)
        inc = cls(model=model, **settings)
        inc.encoder = LabelEncoder.from_config(state["encoder"])
        inc.stage_ = int(state["stage"])
        inc.history_ = list(state.get("history", []))
        inc.stage_classes_ = [list(g) for g in state.get("stage_classes", [])]
        if memory is not None:
            inc.memory = memory
        if strategy is None:
            inc.strategy.set_state(arrays)
        if state.get("groups") is not None:
            inc._groups = {float(m): p for m, p in state["groups"].items()}
            inc._base_rate = state["base_rate"]
        head = find_head(model, inc.head)
        inc._frozen = layers_to_freeze(model, head, inc.freeze)
        return model, inc


def _plain(label):
    """A label as a plain Python value (for JSON and dict lookups)."""
    if isinstance(label, bytes):
        return label.decode("utf-8")
    return label.item() if isinstance(label, np.generic) else label


def _check_evaluation(evaluation):
    if evaluation is None:
        return None
    if not isinstance(evaluation, (tuple, list)) or len(evaluation) != 2:
        raise ValueError(
            "Expected `evaluation` to be a tuple `(x_test, y_test)`. "
            f"Received: {type(evaluation).__name__}"
        )
    x, y = np.asarray(evaluation[0]), np.asarray(evaluation[1])
    if y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            "Expected `evaluation` as `(x_test, y_test)` with 1-D labels, "
            f"one per sample. Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    return x, y


def _check_path(path, argument, suffix=None):
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Expected `{argument}` to be a path or None. "
            f"Received: {argument}={path!r}"
        )
    path = os.fspath(path)
    if suffix is not None and not path.endswith(suffix):
        raise ValueError(
            f"Expected `{argument}` to end in '{suffix}'. "
            f"Received: {argument}='{path}'"
        )
    return path


def _append_replay(batches, replay, count):
    """Appends exemplars to each of the `count` batches of a stage.

    Every batch gets `ceil(exemplars / count)` of them, drawn in a new order
    each epoch, so each exemplar is replayed at least once an epoch and every
    step sees old classes as well as new ones (the replay batches of
    experience replay). Working batch by batch keeps the pipeline's cost to
    a few operations a step.
    """
    size = len(replay)
    per_batch = -(-size // count)
    extra = replay.repeat().batch(per_batch)

    def append(new, old):
        return tuple(
            tf.concat([a, tf.cast(b, a.dtype)], axis=0)
            for a, b in zip(new, old, strict=True)
        )

    # Saying how many batches there are lets `fit` count its steps (with
    # `steps_per_execution` > 1 it would otherwise drop an epoch's last
    # partial execution).
    return (
        tf.data.Dataset.zip((batches, extra))
        .map(append)
        .apply(tf.data.experimental.assert_cardinality(count))
    )


def _frozen_copy(model):
    """The model as it is now, frozen: the teacher for distillation."""
    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    teacher.trainable = False
    return teacher


def _install_loss(model, strategy, context):
    """Puts the strategy's loss terms into `model.compute_loss`.

    Installed on the instance for the stage (Keras calls
    `compute_loss(x, y, y_pred, sample_weight, training)` in every train and
    test step), so the model class and its saved file stay as they were.
    Targets packed as `(labels, logits, mask)` are unpacked for the
    compiled loss and metrics.
    """
    base = strategies.Strategy
    if not strategy.needs_logits and all(
        type(p).loss is base.loss and type(p).weigh is base.weigh
        for p in strategy.parts
    ):
        return
    base_loss = type(model).compute_loss
    base_metrics = type(model).compute_metrics

    def compute_loss(
        x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        labels = y[0] if isinstance(y, tuple) else y
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

    def compute_metrics(x, y, y_pred, sample_weight=None):
        labels = y[0] if isinstance(y, tuple) else y
        return base_metrics(model, x, labels, y_pred, sample_weight)

    model.compute_loss = compute_loss
    model.compute_metrics = compute_metrics


def _remove_loss(model):
    for name in ("compute_loss", "compute_metrics"):
        if name in vars(model):
            delattr(model, name)


def _dataset_arrays(dataset, encoder):
    """All `(x, class_indices)` of a dataset of `(x, label)` elements."""
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        if np.ndim(y) == 0:  # an unbatched element
            x, y = np.expand_dims(x, 0), np.reshape(y, (1,))
        xs.append(x)
        ys.append(encoder.transform(_text(_flat_labels(y).tolist())))
    return np.concatenate(xs), np.concatenate(ys)


def _same_paths(old, new):
    return sorted(map(tuple, old.values())) == sorted(map(tuple, new.values()))


def _flat_labels(y):
    """A batch (or element) of labels as a 1-D object array; one-hot rows
    become their class index, as with arrays."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[-1] > 1:
        y = labels_from_onehot(y)
    return np.reshape(np.asarray(y, dtype=object), (-1,))


def _text(labels):
    """TensorFlow hands strings back as bytes; the user gave `str`."""
    return [
        label.decode("utf-8") if isinstance(label, bytes) else label
        for label in labels
    ]


def _sortable(labels):
    try:
        np.unique(labels)
    except TypeError:
        return False
    return True
