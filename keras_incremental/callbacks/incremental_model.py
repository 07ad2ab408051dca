"""`IncrementalModel`: the stage lifecycle of class-incremental training.

The callback runs the lifecycle and holds the run together; the work lives
in named parts with explicit inputs and outputs: `RunOptions` (checked
options), `RunState` (the records a checkpoint holds), `prepare_stage` (the
stage's data), `Teacher`, `StageFunctions` (the compiled-function cache),
`LayerTraining` (freezing and learning rates), `capacity`, `evaluation`
(records, metrics, report) and `serving_exports`. See
`docs/architecture.md`.
"""

import copy
import dataclasses
import functools
import uuid

import keras
import numpy as np

from keras_incremental import compat
from keras_incremental.callbacks import capacity as capacities
from keras_incremental.callbacks import evaluation
from keras_incremental.callbacks import stage_loss
from keras_incremental.callbacks import stage_variables
from keras_incremental.callbacks.layer_training import LayerTraining
from keras_incremental.callbacks.memory_update import memory_functions
from keras_incremental.callbacks.memory_update import updated_memory
from keras_incremental.callbacks.options import Option
from keras_incremental.callbacks.options import RunOptions
from keras_incremental.callbacks.run_start import read_saved_run
from keras_incremental.callbacks.serving_exports import export_stage
from keras_incremental.callbacks.step_functions import StageFunctions
from keras_incremental.callbacks.teacher import Teacher
from keras_incremental.data import stage_data
from keras_incremental.data.labels import LabelEncoder
from keras_incremental.data.preparation import prepare_stage
from keras_incremental.data.targets import label_format
from keras_incremental.memory import ExemplarMemory
from keras_incremental.models.adoption import adopt_model
from keras_incremental.models.freezing import layers_to_freeze
from keras_incremental.models.growth import expand
from keras_incremental.models.growth import resize_lazy_metrics
from keras_incremental.models.heads import find_head
from keras_incremental.models.limits import check_growable_head
from keras_incremental.saving import checkpoint as checkpoints
from keras_incremental.saving.destinations import check_destination
from keras_incremental.saving.run_state import RunState
from keras_incremental.strategies import StageContext
from keras_incremental.strategies.features import outputs
from keras_incremental.utils.checks import check_path


@dataclasses.dataclass(frozen=True)
class FinishedStage:
    """A stage's results computed aside, before the run commits them: its
    records (`state`), the memory updated on a copy, the strategy's state."""

    state: RunState
    memory: ExemplarMemory
    arrays: dict


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
    changed between stages (freeze more, unfreeze, change multipliers or the
    strategy), each checked when set as the constructor checks it, except
    `memory_size`, `seed` and `head`, which the run is made with and which
    cannot change.

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
            none. Its folder is checked for writing when each stage starts;
            a write that still fails leaves the run at the stage before (see
            `save_checkpoint`). Defaults to `None`.
        head: Name of the `ExpandableDense` to grow, or `None` for the last
            one of the model. Defaults to `None`.
        freeze: Layers not to train this stage: `None`, `"backbone"` (all
            but the head), a layer name or regular expression, a list of
            them, or a callable `layer -> bool`. Defaults to `None`.
        learning_rates: Optional dict mapping a layer name or regular
            expression to a learning-rate multiplier (> 0); a nested model's
            name covers every layer inside it. Applied through a
            `MultiplierOptimizer` (a `keras.optimizers.MultiOptimizer` whose
            `learning_rate` is the base rate) whose state carries over
            between stages. Defaults to `None`.
        seed: Integer seed in [0, 2**63) for exemplar selection and
            shuffling. Defaults to
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
            for TensorFlow Serving as the next version (`export`, with the
            class names). Defaults to `None`. Neither `report` nor
            `export_dir` is saved in the checkpoint: `restore` takes them
            again.
        capacity: Spare capacity of the head (see `ExpandableDense`): an
            integer, the number of units to allocate room for (doubled when
            the classes outgrow it), `None` for none, or `"auto"`: on JAX,
            room for `AUTO_CAPACITY` units or twice the classes known,
            whichever is more; none on other backends. With it, JAX compiles
            the train step of a stage once and the later stages reuse it
            (TensorFlow keeps its trace by growing variables in place, and
            PyTorch does not compile). A head with spare capacity needs a
            sparse loss. Not saved in the checkpoint (the head's own
            `capacity` is). Defaults to `"auto"`.

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

    strategy = Option()
    memory_size = Option()
    checkpoint = Option()
    head = Option()
    freeze = Option()
    learning_rates = Option()
    seed = Option()
    evaluation = Option()
    report = Option()
    export_dir = Option()
    capacity = Option()

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
        capacity="auto",
    ):
        super().__init__()
        self.options = RunOptions(
            strategy=strategy,
            memory_size=memory_size,
            checkpoint=checkpoint,
            head=head,
            freeze=freeze,
            learning_rates=learning_rates,
            seed=seed,
            evaluation=evaluation,
            report=report,
            export_dir=export_dir,
            capacity=capacity,
        )
        # The finished stages' records, replaced whole when one commits.
        self._records = RunState(run=uuid.uuid4().hex)
        self.encoder = LabelEncoder()
        self.memory = ExemplarMemory(
            self.memory_size, selection=self._selection(), seed=self.seed
        )
        self._prepared = None  # what `prepare` made for the coming stage
        self._context = None  # the `StageContext` of the stage training
        self._new_classes = []  # the classes the training stage brings
        self._end_deferred = False
        self._adopted_stage = None
        self._teacher = Teacher(self.head)
        self._functions = StageFunctions()
        self._training = LayerTraining()
        # A finished stage whose checkpoint could not be written (see
        # `save_checkpoint`).
        self._unsaved = None
        if model is not None:
            check_growable_head(model, self.head)
            self.set_model(model)

    @property
    def classes_(self):
        """The class names learned so far; index `i` is output unit `i`."""
        return list(self.encoder.classes_)

    @property
    def stage_(self):
        """The number of finished stages."""
        return self._records.stage

    @property
    def history_(self):
        """One record per finished stage (its classes, its accuracies)."""
        return list(self._records.history)

    @property
    def stage_classes_(self):
        """The class indices each finished stage brought."""
        return [list(g) for g in self._records.stage_classes]

    def _known_model(self):
        try:
            return self.model
        except AttributeError:
            return None

    def _head(self, model=None):
        return find_head(self.model if model is None else model, self.head)

    def _selection(self):
        return self.strategy.selection or "random"

    def prepare(self, x, y=None):
        """Learns a stage's new classes and returns `(x, y)` for `model.fit`.

        Call it once before each stage's `fit`. A second `prepare` before
        that `fit` replaces the first: the classes only the first one
        brought are taken back (the head has not grown for them yet).

        Args:
            x: Inputs as a NumPy array (first axis the samples), or a
                `tf.data.Dataset` of `(x, y)` elements, batched or not (then
                `y` is left `None`).
            y: The class labels: a 1-D array or list of ints, strings or
                bytes, a column of shape `(n, 1)` (as `keras.datasets` ship
                them), or a 2-D one-hot array. `None` with a dataset.

        Returns:
            `(x, y)` for `model.fit` with arrays, or `(dataset, None)` with a
            dataset; labels encoded as the compiled loss expects, exemplars of
            earlier classes mixed in when the strategy replays. With logit
            replay (`"der++"`), `y` is `(labels, logits, mask)`, which the
            loss installed for the stage reads.

        Raises:
            ValueError: for an empty stage, x/y of different lengths,
                non-finite inputs, `None` labels, 2-D labels that are not
                one-hot, samples shaped unlike the memory's exemplars or of
                another kind of dtype, a model the package cannot grow, or a
                dataset for a strategy that needs arrays. Nothing is
                changed.
            TypeError: for labels mixing types. Nothing is changed.
        """
        self._check_saved()
        model = self._known_model()
        if model is not None:
            self.options.check_against(model)
        encoder = self._encoder_before_prepare()
        fit_data, prepared, packed = prepare_stage(
            x,
            y,
            encoder,
            self.memory,
            self.strategy,
            functools.partial(target_spec, model, self.head, encoder),
            model_known=model is not None,
            seed=self.seed,
            stage=self.stage_,
        )
        self.encoder, self._prepared = encoder, prepared
        if model is not None:
            # `fit` may build the loss and metrics on the head's output
            # before the callback grows it.
            head = self._head(model)
            head.announce_units(max(len(encoder), head.units))
            if packed:
                stage_loss.unpack_targets(model)
        return fit_data

    def _encoder_before_prepare(self):
        """A copy of the encoder to learn the stage's classes in: the run's
        own is replaced only once `prepare` succeeded. After an earlier
        `prepare` of this stage, the classes it added are taken back, but
        for those a failed `fit` already grew the head for."""
        classes = self.encoder.classes_
        if self._prepared is not None:
            keep = self._prepared.known
            model = self._known_model()
            if model is not None:
                keep = max(keep, self._head(model).units)
            classes = classes[:keep]
        return LabelEncoder(classes or None)

    def encode(self, y):
        """Class labels as the compiled loss's targets at the current width.

        For `validation_data`, `model.evaluate` and custom metrics: class
        indices for sparse losses, one-hot rows for categorical ones. After
        `prepare`, the stage's new classes are known (and counted in the
        one-hot width).

        Args:
            y: Class labels, as `prepare` takes them.

        Returns:
            A NumPy array: int64 indices, or float32 one-hot rows.

        Raises:
            ValueError: for a label of a class the run does not know, or
                labels of the wrong shape.
            TypeError: for labels of another kind than the classes.

        Example:

        ```python
        xs, ys = inc.prepare(x, y)
        model.fit(
            xs,
            ys,
            validation_data=(x_val, inc.encode(y_val)),
            callbacks=[inc],
        )
        ```
        """
        spec = target_spec(self._known_model(), self.head, self.encoder)
        return stage_data.encode(y, self.encoder, spec)

    def class_weight(self, weights):
        """A dict keyed by class name as the dict keyed by index for `fit`.

        Args:
            weights: A dict mapping class names to weights (numbers >= 0).
                Classes left out get weight 1 in `fit`.

        Returns:
            A dict mapping class indices to weights, for
            `model.fit(..., class_weight=...)`.

        Raises:
            ValueError: for a class the run does not know, or a negative or
                non-finite weight.
            TypeError: for `weights` that is not a dict.

        Example:

        ```python
        xs, ys = inc.prepare(x, y)
        model.fit(
            xs,
            ys,
            class_weight=inc.class_weight({"eight": 2.0}),
            callbacks=[inc],
        )
        ```
        """
        return stage_data.class_weight(weights, self.encoder)

    def remember(self, x, y):
        """Fills the exemplar memory from samples of known classes.

        No training: the samples are chosen by the strategy's selection rule
        (random, or herding in the model's feature space) and the memory
        keeps its budget, split evenly over the classes it holds. Use it
        after `adopt` to give the next stage old samples to replay.

        A strategy that learns from old samples itself (`"analytic"`:
        `Strategy.remembers`) takes every sample given, with or without a
        memory: the analytic head adds their statistics and is solved
        again at once, so after `adopt` and `remember` with all the old
        samples it is the ridge fit on them.

        Args:
            x: Inputs as a NumPy array, first axis the samples.
            y: Their class labels, all of classes of finished stages (or
                adopted): not of a stage only prepared, whose classes a
                second `prepare` may take back.

        Returns:
            The number of exemplars now in memory.

        Raises:
            ValueError: without a memory (`memory_size=0`) for a strategy
                that does not remember itself, for a class the
                run does not know or whose stage is not trained yet, or for
                bad inputs as in `prepare`. The memory is unchanged.

        Example:

        ```python
        model, inc = keras_incremental.IncrementalModel.adopt(
            "classifier.keras", classes=names, memory_size=200
        )
        inc.remember(x_old, y_old)
        ```
        """
        # Only classes of finished stages: a second `prepare` may take a
        # pending one's index back and give it to another class.
        self._check_saved()
        committed = LabelEncoder(list(self._records.classes) or None)
        remembers = self.strategy.remembers
        x, indices = stage_data.check_remember(
            x, y, committed, self.memory, needs_memory=not remembers
        )
        memory = self.memory
        if self.memory_size:
            # On a copy (`update` replaces the arrays), kept only when the
            # strategy's part succeeds too.
            embed, predict = self._memory_functions()
            memory = copy.copy(self.memory)
            memory.selection = self._selection()
            memory.update(x, indices, embed=embed, predict=predict)
        if remembers:
            self._strategy_remembers(x, indices)
        self.memory = memory
        return len(self.memory)

    def _strategy_remembers(self, x, indices):
        """Gives `remember`'s samples to a strategy that learns from them
        (`Strategy.remembers`), with the model of the last finished stage."""
        model = self._known_model()
        if model is None:
            raise ValueError(
                f"The strategy {self.strategy.name!r} learns from the "
                "samples `remember` takes with the model's features, and "
                "there is no model yet; expected `model=` in "
                "`IncrementalModel` (or `adopt`)."
            )
        head = self._head(model)
        expected = tuple(model.inputs[0].shape[1:]) if model.inputs else None
        received = tuple(x.shape[1:])
        if expected is not None and (
            len(expected) != len(received)
            or any(
                e not in (None, r)
                for e, r in zip(expected, received, strict=True)
            )
        ):
            raise ValueError(
                f"`remember` got samples of shape {received}; expected "
                f"the model's input shape {expected}. Nothing was changed."
            )
        self.strategy.remember(self._between_stages(model, head), x, indices)

    def decode(self, indices):
        """Maps class indices (e.g. `predict(x).argmax(-1)`) to class names."""
        return self.encoder.inverse_transform(np.asarray(indices))

    def _check_saved(self):
        """Refuses a new stage while the last one's checkpoint is unwritten."""
        if self._unsaved is not None:
            raise ValueError(
                f"Stage {self._unsaved.state.stage} finished but its "
                f"checkpoint could not be written to '{self.checkpoint}'; "
                "expected `inc.save_checkpoint()` (once the cause is fixed) "
                "or `inc.save_checkpoint(path)` before the next stage. Its "
                "training is kept. Nothing was changed."
            )

    def on_train_begin(self, logs=None):
        model = self.model
        self._check_stage_can_start(model)
        self._export_missed_stage(model)
        # The stage's end comes after every callback's `on_train_end`, so
        # that one restoring weights (EarlyStopping) acts first.
        self._end_deferred = compat.run_after_train_end(
            self, self._finish_stage
        )
        self._clear_failed_stage(model)
        head = self._head(model)
        old_units = head.units
        self._prepare_head(model, head)
        teacher = self._refresh_teacher(model)
        self._build_optimizer(model, head)
        self._grow_head(model, head)
        self._training.apply(
            model,
            head,
            self.freeze,
            self.learning_rates,
            train_head=self.strategy.trains_head,
            train_body=self.strategy.trains_body,
        )
        self._context = self._stage_context(model, head, old_units, teacher)
        self.strategy.begin_stage(self._context)
        self._install_stage_step(model, head, teacher)

    def _check_stage_can_start(self, model):
        self._check_saved()
        self.options.check_against(model)
        if self._prepared is None:
            raise ValueError(
                "`fit` was called with this `IncrementalModel` but without "
                "`inc.prepare(x, y)` for the stage; expected one `prepare` "
                "before each stage's `fit`, so that new classes get their "
                "own output units and the labels their indices. Received "
                "a `fit` whose data `prepare` did not make. Nothing was "
                "changed."
            )
        self.options.check_destinations()

    def _export_missed_stage(self, model):
        """The last stage's export failed or was killed: its model is still
        the one here, until this stage trains."""
        if (
            self.export_dir is not None
            and self._records.exported < self.stage_
            and self._head_is_committed(model)
        ):
            self.export()

    def _clear_failed_stage(self, model):
        """A `fit` that failed never reached `on_train_end`: drops what its
        stage installed before this one starts."""
        stage_loss.remove_loss(model)
        stage_variables.drop(model)
        self._context = None

    def _prepare_head(self, model, head):
        """Capacity, free width and the adopt hook, before the teacher is
        copied, so that it has the same layout."""
        if len(self.encoder.classes_) > head.units:
            capacities.reserve(
                model, head, self.capacity, len(self.encoder.classes_)
            )
        # The stage's functions see the head's width as free, so that they
        # stay valid when it grows in place next stage; unless a compiled
        # metric still to be built might size itself from it.
        head.free_width = compat.compiled_metrics_allow_free_width(model)
        if self._adopted(head):
            self._adopt(model, head)

    def _refresh_teacher(self, model):
        # At the first stage too, with no class yet: its outputs are empty,
        # and the stage's train function then serves later ones.
        if not self.strategy.needs_teacher:
            return None
        return self._teacher.refresh(model)

    def _build_optimizer(self, model, head):
        """Built now, not in the first traced step: its slots for the head
        then grow with it, in place, before anything is traced."""
        optimizer = model.optimizer
        if optimizer is not None and not optimizer.built:
            variables = model.trainable_variables
            own = {id(v) for v in head.weights}
            if not self.strategy.trains_head:
                # The strategy sets the head's weights itself: no slots.
                variables = [v for v in variables if id(v) not in own]
            if not self.strategy.trains_body:
                # Nor for the body it keeps fixed.
                variables = [v for v in variables if id(v) in own]
            with compat.variable_scope_of(head.kernel):
                optimizer.build(variables)

    def _grow_head(self, model, head):
        missing = len(self.encoder.classes_) - head.units
        if missing > 0:
            expand(model, missing, layer=head)
        # The classes no earlier finished stage brought (also those a failed
        # `fit` of this stage already grew the head for).
        recorded = {i for group in self._records.stage_classes for i in group}
        self._new_classes = [i for i in range(head.units) if i not in recorded]

    def _stage_context(self, model, head, old_units, teacher):
        prepared = self._prepared
        samples = prepared.samples
        return StageContext(
            model=model,
            head=head,
            stage=self.stage_,
            old_units=old_units,
            teacher=teacher,
            teacher_head=None if teacher is None else self._head(teacher),
            memory=self.memory,
            data=samples if isinstance(samples, tuple) else None,
            replayed=prepared.replayed,
            labels=prepared.labels,
            read_data=functools.partial(
                stage_data.stage_arrays, samples, self.encoder
            ),
        )

    def _install_stage_step(self, model, head, teacher):
        """The strategy's loss and variables in the train step, the metrics
        sized, and the step functions reused or remade."""
        stage_loss.install_loss(model, self.strategy, self._context)
        stage_variables.carry(
            model,
            (teacher.weights if teacher is not None else [])
            + self.strategy.stage_variables(),
        )
        # Metrics that size themselves inside the first traced step would
        # see the free width: size them now.
        resize_lazy_metrics(model, head)
        self._functions.use(model, head, self._context, self.strategy, teacher)

    def _adopted(self, head):
        """Whether this stage is the first on an adopted head: units that
        no stage of this run trained (`adopt` marks its history entry)."""
        if head.units == 0 or self._adopted_stage == self.stage_:
            return False
        history = self._records.history
        return bool(history and history[-1].get("adopted"))

    def _adopt(self, model, head):
        """Runs the strategy's `adopt` hook, once, before the teacher."""
        frozen = {
            id(v)
            for layer in layers_to_freeze(model, head, self.freeze)
            for v in layer.weights
        }
        self.strategy.adopt(
            self._between_stages(
                model,
                head,
                variables=[
                    v for v in model.trainable_variables if id(v) not in frozen
                ],
            )
        )
        self._adopted_stage = self.stage_

    def on_train_end(self, logs=None):
        if not self._end_deferred:
            self._finish_stage()

    def _finish_stage(self):
        """The stage's end, a transaction: the results are computed aside,
        written to the checkpoint, then committed; the report and the
        serving export follow. Runs after every callback's `on_train_end`
        (see `on_train_begin`), so all of them see the final weights."""
        self._end_deferred = False
        model = self.model
        head = self._head(model)
        context = self._context
        if context is not None:
            self._functions.keep(
                model, head, context, self.strategy, context.teacher
            )
        # The model gets plain functions (traced with its width stated) in
        # between stages.
        head.free_width = False
        stage_loss.remove_loss(model)
        stage_variables.drop(model)
        compat.remake_compiled_functions(model)
        before = self.strategy.get_state()
        try:
            if context is not None:
                self.strategy.end_stage(context)
                context.teacher = None
            finished = self._finished()
        except BaseException:
            # The run stays at the stage before; `fit` again to redo it.
            self.strategy.set_state(before)
            raise
        self._prepared = None
        # The checkpoint first: a failing report or export must not cost
        # the stage. A failing checkpoint leaves the run as before the
        # stage, its result kept for `save_checkpoint`.
        if self.checkpoint is not None:
            try:
                self._write_checkpoint(self.checkpoint, finished)
            except BaseException as error:
                self.strategy.set_state(before)
                self._unsaved = finished
                error.add_note(
                    f"keras_incremental: stage {finished.state.stage} "
                    f"trained, but its checkpoint '{self.checkpoint}' was not "
                    "written; the run stays at the stage before. Call "
                    "`inc.save_checkpoint()` once the cause is fixed."
                )
                raise
        self._commit(finished)

    def _finished(self):
        """The run after this stage, computed aside: the memory updated on
        a copy, the stage's records added."""
        memory = self._updated_memory()
        stage_classes = [*self.stage_classes_, list(self._new_classes)]
        entry = self._stage_record(stage_classes, memory)
        records = self._records
        state = records.replace(
            stage=records.stage + 1,
            classes=tuple(
                self.encoder.classes_[: sum(len(g) for g in stage_classes)]
            ),
            history=(*records.history, entry),
            stage_classes=tuple(stage_classes),
        )
        return FinishedStage(state, memory, self.strategy.get_state())

    def _commit(self, finished):
        """Makes `finished` the run's state, then writes its report and
        serving export (a failure there does not cost the stage)."""
        self._records = finished.state
        self.memory = finished.memory
        if self.report is not None:
            evaluation.write_report(
                self.report,
                self.strategy.name,
                self.encoder.classes_,
                self.history_,
            )
        if self.export_dir is not None:
            self.export()

    def _run_state(self, finished=None):
        """The `RunState` a checkpoint holds: the records (of `finished`,
        when given) with the options and learning-rate groups now."""
        records = self._records if finished is None else finished.state
        return records.replace(
            settings=self.options.settings(),
            evaluation=self.evaluation is not None,
            freeze_callable=callable(self.freeze),
            groups=self._training.groups,
            base_rate=self._training.base_rate,
            head_frozen_by_strategy=self._training.head_frozen,
            body_frozen_by_strategy=self._training.body_frozen,
        )

    def _write_checkpoint(self, path, finished=None):
        memory = self.memory if finished is None else finished.memory
        arrays = self.strategy.get_state() if finished is None else None
        checkpoints.write_checkpoint(
            path,
            self.model,
            self._run_state(finished),
            memory if self.memory_size else None,
            finished.arrays if finished is not None else arrays,
        )

    def save_checkpoint(self, path=None):
        """Writes the run's last finished stage to a checkpoint.

        After a stage whose checkpoint could not be written (a full disk, a
        folder made read-only), the run stays at the stage before and keeps
        the finished one aside: `save_checkpoint()` writes it once the cause
        is fixed, then the run moves on to it (and writes the report and the
        serving export the stage end could not). Otherwise it writes the
        current stage again, to `path` or to the run's `checkpoint`.

        Args:
            path: Optional `.keras` path to write; `None` for the run's
                `checkpoint`. Defaults to `None`.

        Returns:
            The path written, as a string.

        Raises:
            ValueError: without a path (no `checkpoint` and `path=None`),
                without a model, for a head grown for classes of a stage not
                finished, or a path that cannot be written. Nothing is
                changed.
            OSError: when the write itself fails; the previous checkpoint
                file is kept whole.

        Example:

        ```python
        try:
            model.fit(xs, ys, callbacks=[inc])
        except OSError:
            ...  # free some disk space
            inc.save_checkpoint()
        ```
        """
        if path is None:
            path = self.checkpoint
        if path is None:
            raise ValueError(
                "No checkpoint path: expected `path` or a run made with "
                "`checkpoint=...`. Received: path=None, checkpoint=None"
            )
        path = checkpoints.check_checkpoint_path(path, argument="path")
        model = self._known_model()
        if model is None:
            raise ValueError(
                "No model yet: expected a run with a model (`model=`, "
                "`adopt`, `restore`, or a finished stage) to save."
            )
        check_destination(path, "path")
        if self._unsaved is None:
            self._check_committed_width(model)
            self._write_checkpoint(path)
            return path
        finished = self._unsaved
        self._write_checkpoint(path, finished)
        self.strategy.set_state(finished.arrays)
        self._unsaved = None
        self._commit(finished)
        return path

    def _head_is_committed(self, model):
        """Whether the head has a unit per class of the finished stages
        (not yet grown for a stage started and not finished)."""
        return self._head(model).units == len(self._records.classes)

    def _check_committed_width(self, model):
        if not self._head_is_committed(model):
            head = self._head(model)
            raise ValueError(
                f"The head '{head.name}' has {head.units} units but the run's "
                f"finished stages know {len(self._records.classes)} classes: "
                "a stage was started and not finished. Expected a call after "
                "a stage's `fit` ended. Nothing was written."
            )

    def export(self, export_dir=None):
        """Exports the last finished stage for TensorFlow Serving.

        Writes the model as the next version of `export_dir`
        (`export_for_serving`, with the class names and, in the version's
        `assets.extra/keras_incremental.json`, the run and stage it holds).
        A stage already exported there by this run is not written again.
        A run with `export_dir` calls it at each stage end; a stage whose
        export failed or was killed is exported before the next stage
        trains, or by calling this again.

        Args:
            export_dir: Base folder of the versions; `None` for the run's
                `export_dir`. Defaults to `None`.

        Returns:
            The path of the stage's version folder, as a string.

        Raises:
            ValueError: without a folder, a model or a finished stage, or
                for a folder that cannot be written. Nothing is written.

        Example:

        ```python
        model, inc = keras_incremental.IncrementalModel.restore(
            "run/stages.keras", export_dir="serving/model"
        )
        inc.export()  # the restored stage, if its export was lost
        ```
        """
        if export_dir is None:
            export_dir = self.export_dir
        if export_dir is None:
            raise ValueError(
                "No export folder: expected `export_dir` or a run made with "
                "`export_dir=...`. Received: export_dir=None"
            )
        export_dir = check_path(export_dir, "export_dir", folder=True)
        model = self._known_model()
        if model is None or self.stage_ == 0:
            raise ValueError(
                "Nothing to export yet: expected a run with a finished stage "
                f"(`fit`, `adopt` or `restore`). Received: stage {self.stage_}"
            )
        self._check_committed_width(model)
        path = export_stage(
            model,
            export_dir,
            list(self._records.classes),
            self._records.run,
            self.stage_,
            self.strategy.score_layers(self._stage_or_run_context()),
        )
        if export_dir == self.export_dir:
            self._records = self._records.replace(exported=self.stage_)
        return path

    def predict(self, x, batch_size=None, return_scores=False):
        """Class indices for `x`: the head's argmax, or the strategy's own
        classifier where it has one (iCaRL's nearest mean of exemplars).

        Args:
            x: Inputs, as for `model.predict`.
            batch_size: Passed to `model.predict`. Defaults to `None`.
            return_scores: Whether to return the strategy's scores beside
                the classes (`Strategy.score_layers`; the serving exports
                answer the same). Defaults to `False`.

        Returns:
            1-D integer array of class indices; `decode` maps them to names.
            With `return_scores`, `(indices, scores)`: `scores` a dict of
            1-D float arrays by name (empty when the strategy has none).
        """
        model = self._known_model()
        if model is None:
            raise ValueError(
                "No model yet: pass `model=` to `IncrementalModel` or train "
                "a stage with `fit(..., callbacks=[inc])` first."
            )
        if not return_scores:
            return self._predict(x, None, batch_size)
        context = self._stage_or_run_context()
        layers = self.strategy.score_layers(context)
        logits = outputs(model, x, batch_size)
        scores = {
            name: keras.ops.convert_to_numpy(layer(logits)).reshape(-1)
            for name, layer in layers.items()
        }
        return self._predict(x, None, batch_size), scores

    def _between_stages(self, model, head, variables=None):
        """A `StageContext` with no stage data: the head's units are the
        old ones."""
        return StageContext(
            model=model,
            head=head,
            stage=self.stage_,
            old_units=head.units,
            memory=self.memory,
            variables=variables,
        )

    def _stage_or_run_context(self, memory=None):
        """The `StageContext` of the stage training, or one of the run."""
        memory = self.memory if memory is None else memory
        if self._context is not None:
            return dataclasses.replace(self._context, memory=memory)
        return StageContext(
            model=self.model,
            head=self._head(),
            stage=self.stage_,
            old_units=0,
            memory=memory,
        )

    def _predict(self, x, memory=None, batch_size=None):
        """`predict` with `memory` (default: the run's) as the exemplars."""
        model = self.model
        context = self._stage_or_run_context(memory)
        indices = self.strategy.predict(context, x)
        if indices is None:
            indices = np.argmax(outputs(model, x, batch_size), axis=-1)
        return np.asarray(indices, dtype="int64")

    def _stage_record(self, stage_classes, memory=None):
        return evaluation.stage_record(
            self.encoder,
            stage_classes,
            self.evaluation,
            functools.partial(self._predict, memory=memory),
        )

    def metrics(self):
        """The run's continual metrics so far, from `evaluation` data.

        Returns:
            A dict: `accuracy_matrix` (row i: accuracy on each stage's
            classes after stage i), `final_accuracy`,
            `average_incremental_accuracy`, `forgetting`,
            `backward_transfer`, `stage_accuracy`; empty without
            evaluation data.
        """
        return evaluation.summarize(self.history_)

    def _updated_memory(self):
        """The memory after this stage's samples, updated on a copy."""
        if self._prepared is None or not self.memory_size:
            return self.memory
        return updated_memory(
            self.memory,
            self._prepared.samples,
            self.encoder,
            self.strategy,
            self.model,
            self._head(),
        )

    def _memory_functions(self):
        model = self._known_model()
        head = None if model is None else self._head(model)
        return memory_functions(model, head, self.strategy)

    def state(self):
        """The run's state for the checkpoint, as a JSON-able dict.

        Output paths (checkpoint, report, serving export) are not part of
        it: a restored run writes where the caller of `restore` says.
        """
        return self._run_state().to_json()

    @classmethod
    def adopt(cls, source, classes, head=None, **options):
        """Starts a run from a classifier trained without this package.

        The twin of `restore` for the model you already have: its output
        `keras.layers.Dense` (linear or softmax, possibly followed by layers
        without weights that keep its width, such as `Softmax`, `Activation`
        or `Dropout`) is replaced by an `ExpandableDense`
        with the same weights, so every prediction is unchanged, and the
        returned `IncrementalModel` knows its classes. The source counts as
        the run's first stage: the next `prepare` and `fit` bring the new
        classes. No old data is needed; to replay old classes, fill the
        memory with `inc.remember(x_old, y_old)`.

        A compiled source (or a `.keras` file saved after `compile`) gives a
        compiled model with the same loss, metrics and optimizer, its state
        (step counter, moments) carried over. A source saved without
        `compile` gives a model without it: call `model.compile(...)` before
        the next `fit`.

        Args:
            source: A built Sequential or functional `keras.Model`, or the
                path of a `.keras` file of one (loaded with Keras's
                `safe_mode`). It is not changed.
            classes: The names of the source's output columns, in column
                order: ints, strings or bytes, one per unit, no duplicates.
                They are not re-sorted.
            head: Name of the output `Dense` to grow, or `None` for the one
                whose output is the model's output. Defaults to `None`.
            **options: The constructor's keyword arguments (`strategy`,
                `memory_size`, `checkpoint`, `freeze`, `learning_rates`,
                `seed`, `evaluation`, `report`, `export_dir`, `capacity`).

        Returns:
            `(model, inc)`: the model with its expandable head, and an
            `IncrementalModel` with `classes_ == list(classes)` and
            `stage_ == 1`.

        Raises:
            ValueError: for a source whose output layer is not a `Dense`,
                that has several outputs, a path that is not a readable
                `.keras` file, `classes` of another length than the head's
                units, or repeated class names. Nothing is written.
            TypeError: for a source that is neither a model nor a path,
                `classes` that are not a sequence of class names, or an
                unknown option.

        Example:

        ```python
        model, inc = keras_incremental.IncrementalModel.adopt(
            "classifier.keras", classes=list(range(10)), memory_size=200
        )
        inc.remember(x_old, y_old)  # optional: old samples to replay
        xs, ys = inc.prepare(x_new, y_new)  # labels 10 and 11 arrive
        model.fit(xs, ys, epochs=5, callbacks=[inc])
        ```
        """
        if "model" in options:
            raise TypeError(
                "`adopt` makes the model from `source`; expected no `model=` "
                "option. Received: model=..."
            )
        model, head_name = adopt_model(source, classes, head=head)
        encoder = LabelEncoder(
            classes if isinstance(classes, np.ndarray) else list(classes)
        )
        inc = cls(model=model, head=head_name, **options)
        inc._start_adopted(encoder)
        return model, inc

    def _start_adopted(self, encoder):
        """Takes the adopted classes as the run's first, finished stage."""
        self.encoder = encoder
        stage_classes = [list(range(len(encoder)))]
        entry = self._stage_record(stage_classes)
        # Its units were trained elsewhere: the strategy's `adopt` hook runs
        # before the next stage (see `_adopted`). The source is the user's
        # own model: not a stage to export.
        entry["adopted"] = True
        self._records = self._records.replace(
            stage=1,
            classes=tuple(encoder.classes_),
            history=(entry,),
            stage_classes=tuple(stage_classes),
            exported=1,
        )

    @classmethod
    def restore(
        cls,
        path,
        strategy=None,
        *,
        checkpoint=None,
        report=None,
        export_dir=None,
        evaluation=None,
        freeze=None,
        capacity="auto",
    ):
        """Loads a stage checkpoint, ready for the next stage.

        The checkpoint is read as untrusted data: every part is checked
        (sizes before reading, the state key by key, the model with Keras's
        `safe_mode`, the parts against each other) and a bad file is refused
        with nothing changed. Nothing in it decides where the restored run
        writes: its checkpoint goes to `path` (or `checkpoint`), and its
        report and serving export only where these arguments say.

        Args:
            path: A checkpoint written by `IncrementalModel(checkpoint=...)`.
            strategy: Optional strategy (name or object) to go on with
                instead of the saved one; needed when the run used strategy
                parts of your own, which the checkpoint names but cannot
                rebuild. Defaults to `None`, the saved strategy.
            checkpoint: Where the next stages' checkpoints go. Defaults to
                `None`: `path`.
            report: Optional path of the JSON report to write after each
                stage. Defaults to `None` (none).
            export_dir: Optional serving export folder. The restored stage
                is exported there before the next stage trains unless this
                run exported it already. Defaults to `None` (none).
            evaluation: Optional `(x_test, y_test)`, as in the constructor.
                A file does not hold the test data: a run that had some
                warns when it is not given again. Defaults to `None`.
            freeze: Optional `freeze`, as in the constructor. Defaults to
                `None`: the saved names or patterns. A callable cannot be
                saved: a run that had one warns when it is not given again.
            capacity: The `capacity` option, as in the constructor (not
                saved; a head allocated with spare capacity keeps it).
                Defaults to `"auto"`.

        Returns:
            `(model, inc)`: the model with its optimizer state, and an
            `IncrementalModel` with the class names, memory, stage number and
            settings of the run.

        Raises:
            ValueError: naming the file, the part and the problem, for a
                file that is not a valid checkpoint (a newer format, parts
                that disagree, unsafe or oversized contents). Nothing is
                changed.
        """
        saved = read_saved_run(path, strategy, freeze, evaluation)
        inc = cls(
            model=saved.model,
            checkpoint=saved.path if checkpoint is None else checkpoint,
            report=report,
            export_dir=export_dir,
            evaluation=evaluation,
            capacity=capacity,
            **saved.settings,
        )
        inc._resume(saved)
        return saved.model, inc

    def _resume(self, saved):
        """Takes a checkpoint's strategy arrays, classes, records, memory,
        learning-rate groups and frozen layers."""
        if saved.same_parts:
            try:
                self.strategy.set_state(saved.arrays)
                self.strategy.check_state(self.model, self._head())
            except ValueError as error:
                raise ValueError(
                    f"Checkpoint '{saved.path}' is not valid: {error}"
                ) from error
        state = saved.state
        self.encoder = LabelEncoder(list(state.classes) or None)
        self._records = state.replace(run=state.run or self._records.run)
        if saved.memory is not None:
            self.memory = saved.memory
        if state.groups is not None:
            self._training = LayerTraining(state.groups, state.base_rate)
        head = self._head()
        frozen = layers_to_freeze(self.model, head, self.freeze)
        if state.head_frozen_by_strategy and head not in frozen:
            # Frozen by a strategy that sets the head's weights itself:
            # trained again if the next stage's strategy does not.
            frozen.append(head)
            self._training.head_frozen = True
        if state.body_frozen_by_strategy:
            # Likewise the body, for a strategy that keeps it fixed (the
            # layers it froze are frozen in the file, as are any the user
            # froze: those are not told apart).
            body = [
                layer
                for layer in layers_to_freeze(self.model, head, "backbone")
                if layer not in frozen
            ]
            frozen.extend(body)
            self._training.body_frozen = bool(body)
        self._training.frozen = frozen


def target_spec(model, head, encoder):
    """The label format the compiled loss of `model` (or `None`: sparse)
    wants, and the one-hot width: the classes of `encoder`, or the head's
    units where it has more."""
    fmt = label_format(model) if model is not None else "sparse"
    width = len(encoder)
    if model is not None:
        width = max(width, find_head(model, head).units)
    return stage_data.TargetSpec(fmt, width)
