"""The strategy protocol: a memory policy, loss terms and stage hooks."""

import dataclasses

import keras


@dataclasses.dataclass
class StageContext:
    """What a strategy sees of the stage being trained.

    Attributes:
        model: The model being trained.
        head: Its `ExpandableDense` head.
        stage: The stage number, 0 for the first.
        old_units: Output units before this stage's growth (the classes of
            earlier stages).
        teacher: A frozen copy of the model as it ended the previous stage
            (at the first stage, as it started: its head has no units and
            its outputs have width 0, or, with spare capacity, all columns
            masked), or `None` when no part asked for one (`needs_teacher`).
            It is never an attribute of the model and never saved with it;
            on JAX its weights travel through the stage's compiled step as
            the state of a metric of the model (`stage_variables`), taken
            off when the stage ends.
        teacher_head: The teacher's head, or `None` without a teacher.
        memory: The `ExemplarMemory` of the run.
        data: The stage's own samples, `(x, class_indices)` NumPy arrays, or
            `None` when the stage came as a `tf.data.Dataset`.
        replayed: The class indices of the exemplars mixed into the stage,
            or `None` when none were.
        labels: The class indices of the stage's own samples (arrays or
            dataset), or `None` when not known.
        variables: The variables the stage may train (the frozen layers'
            left out), or `None` for the model's trainable variables.
        read_data: A function of no arguments that returns the stage's own
            samples as `(x, class_indices)` NumPy arrays, also for a stage
            given as a `tf.data.Dataset` (read once more), or `None`.
    """

    model: keras.Model
    head: keras.layers.Layer
    stage: int
    old_units: int
    teacher: keras.Model = None
    teacher_head: keras.layers.Layer = None
    memory: object = None
    data: tuple = None
    replayed: object = None
    labels: object = None
    variables: list = None
    read_data: object = None


class Strategy:
    """A method against forgetting: the base class, which does nothing.

    Used as is, it is plain fine-tuning (`"finetune"`): the baseline that
    forgets. Subclasses override the hooks they need; `Combine` composes
    several. Hooks run inside `IncrementalModel`:

    - `adopt(context)` once, at the first stage that starts on a head whose
      units this run did not train (a model trained elsewhere and adopted),
      before the teacher is taken and before the head grows;
    - `begin_stage(context)` after the head grew, before the first step;
    - `loss(context, x, y, y_pred)` inside the train step (traced), returns
      an extra loss term or `None`; `y` is the stage's target structure;
    - `weigh(context, labels, sample_weight)` inside the train step,
      returns the sample weights for the compiled loss (or `None`);
    - `observe(context, features, labels, sample_weight)` inside the train
      step, with the batch's features (the head's inputs): to accumulate
      statistics in the strategy's `stage_variables`, adding no loss;
    - `end_stage(context)` after the last step, before the memory update;
    - `predict(context, x)` class indices, or `None` to use the head;
    - `remember(context, x, labels)` from `IncrementalModel.remember`, for
      a strategy that learns from old samples itself (`remembers`).

    Flags read by the callback: `replay` (mix the memory's exemplars into
    `prepare`), `selection` (`"random"` or `"herding"`; `None` for no
    preference), `needs_teacher`, `needs_logits` (store logits with the
    exemplars and pass them to `loss` as `y = (labels, logits, mask)`),
    `needs_arrays` (the stage must come as NumPy arrays, not `tf.data`),
    `trains_head` (`False`: the head gets no gradient step and no optimizer
    state during a stage; the strategy sets its weights itself, in
    `end_stage`), `trains_body` (`False`: every layer below the head is
    frozen during a stage, as with `freeze="backbone"`), `remembers` (the
    samples given to `IncrementalModel.remember` go to the strategy's
    `remember`, with or without an exemplar memory). `trains_head` and
    `trains_body` are read at each stage's start (also through `Combine`),
    so a strategy may change them between stages; the others are read
    once.

    Example:

    ```python
    inc = keras_incremental.IncrementalModel(strategy=Strategy())  # finetune
    ```
    """

    name = "finetune"
    replay = False
    selection = "random"
    needs_teacher = False
    needs_logits = False
    needs_arrays = False
    trains_head = True
    trains_body = True
    remembers = False

    def adopt(self, context):
        """Called once before the first stage on an adopted head.

        An adopted head has units that no stage of this run trained (a
        model trained elsewhere, with its classes given to the encoder and
        its exemplars to the memory). The hook runs before the teacher is
        taken and before the head grows, so what it changes in the model
        is what the teacher and the stage start from.

        Args:
            context: A `StageContext` with no teacher; `old_units` is the
                adopted head's width.
        """

    def begin_stage(self, context):
        """Called after the head grew, before the stage's first step.

        Args:
            context: The stage's `StageContext`.
        """

    def loss(self, context, x, y, y_pred):
        """An extra loss term for one train step (traced), or `None`.

        Args:
            context: The stage's `StageContext`.
            x: The batch's inputs.
            y: The batch's targets as `prepare` made them.
            y_pred: The model's outputs on `x`.

        Returns:
            A scalar tensor added to the compiled loss, or `None`.
        """
        return None

    def weigh(self, context, labels, sample_weight):
        """Per-sample weights for the compiled loss in one train step.

        Args:
            context: The stage's `StageContext`.
            labels: The batch's labels (class indices or one-hot).
            sample_weight: The weights `fit` was given, or `None`.

        Returns:
            The weights to use, or `sample_weight` unchanged.
        """
        return sample_weight

    def observe(self, context, features, labels, sample_weight):
        """Sees one train step's batch (traced), adding no loss.

        For statistics of the stage's data: update the strategy's
        `stage_variables` here (`assign_add`), so that every backend's
        compiled step carries them.

        Args:
            context: The stage's `StageContext`.
            features: The batch's features: the head's inputs, computed in
                inference mode.
            labels: The batch's labels (class indices or one-hot).
            sample_weight: The weights `fit` was given, or `None`.
        """

    def trace_signature(self, context):
        """What the traced `loss` and `weigh` take from Python for a stage.

        `IncrementalModel` keeps a stage's train function for the next stage
        when the signatures of both stages are equal, so everything that
        `loss` and `weigh` read at trace time and that changes from stage to
        stage must be in it (or be read from variables). The default is safe:
        the stage number for a strategy with its own `loss` or `weigh` (so a
        new trace each stage), nothing for one without.

        Args:
            context: The stage's `StageContext`.

        Returns:
            A hashable value.
        """
        if not traces_step(self):
            return ()
        return (context.stage,)

    def stage_variables(self):
        """The variables that the traced `loss` and `weigh` read and that
        the model does not own (a per-stage value kept in a variable).

        A compiled JAX step takes the model's variables as arguments and
        takes any other variable it reads as a constant. `IncrementalModel`
        passes these through its stages' steps as state instead, so that a
        step kept for the next stage reads their values of that stage.

        Returns:
            A list of `keras.Variable`; empty by default.
        """
        return []

    def end_stage(self, context):
        """Called after the stage's last step, before the memory update.

        Args:
            context: The stage's `StageContext`.
        """

    def predict(self, context, x):
        """Class indices for `x` from the strategy's own classifier.

        Args:
            context: The latest `StageContext`.
            x: Inputs, as a NumPy array.

        Returns:
            1-D class indices, or `None` to use the head's argmax.
        """
        return None

    def remember(self, context, x, labels):
        """Learns from samples of known classes, without training
        (`IncrementalModel.remember`, for a strategy with `remembers`).

        Args:
            context: A `StageContext` of the run's last finished stage (no
                teacher, no stage data).
            x: The samples, a NumPy array, checked like `prepare`'s.
            labels: Their class indices, 1-D int64.
        """

    def score_layers(self, context):
        """Scores the strategy gives beside every prediction.

        `IncrementalModel.predict(x, return_scores=True)` returns them, and
        every serving export answers them as outputs of its signature.

        Args:
            context: The latest `StageContext`.

        Returns:
            A dict mapping output names to Keras layers that map the
            model's output `(batch, classes)` to one score per sample;
            empty by default. Off TensorFlow, each layer must be a Keras
            one or a registered serializable one that the export's
            TensorFlow subprocess can import.
        """
        return {}

    def get_state(self):
        """What the strategy learned (a dict of NumPy arrays by name), saved
        with the stage checkpoint; empty for most strategies."""
        return {}

    def set_state(self, state):
        """Restores what `get_state` returned."""

    def check_state(self, model, head):
        """Raises `ValueError` when the state set by `set_state` (read from
        a checkpoint) does not fit `model` and its head `head` (the run's
        `ExpandableDense`)."""

    def state_shapes(self, model, head):
        """The shapes `get_state`'s arrays may have for `model` and its head
        `head`, by name, or `None` for no declaration.

        A checkpoint's reader checks every saved array's declared shape
        against them before it reads the array (a name not declared, or
        another shape, is refused). Without a declaration, each array may be
        as large as the model's largest weight, and all of them twice its
        weights.
        """
        return None

    @property
    def parts(self):
        """The strategies this one is made of (itself for a single one)."""
        return [self]

    def get_config(self):
        """The constructor arguments, JSON-able."""
        return {}

    def __repr__(self):
        arguments = ", ".join(
            f"{k}={v!r}" for k, v in self.get_config().items()
        )
        return f"{type(self).__name__}({arguments})"


class Combine(Strategy):
    """Several strategies applied together: their loss terms add up.

    Args:
        *parts: `Strategy` objects. Their hooks run in the order given.
        name: The name reported in checkpoints and benchmarks. Defaults to
            the parts' names joined by `"+"`.

    Example:

    ```python
    strategy = Combine(Replay(), Distillation(), WeightAligning())
    inc = keras_incremental.IncrementalModel(strategy=strategy,
                                             memory_size=200)
    ```
    """

    def __init__(self, *parts, name=None):
        flat = []
        for part in parts:
            if not isinstance(part, Strategy):
                raise TypeError(
                    "Expected `Strategy` objects to combine. "
                    f"Received: {part!r} of type {type(part).__name__}"
                )
            flat.extend(part.parts)
        selections = {
            p.selection for p in flat if p.replay and p.selection is not None
        }
        if len(selections) > 1:
            raise ValueError(
                "Combined strategies disagree on the exemplar selection; "
                f"expected one. Received: {sorted(selections)}"
            )
        self._parts = flat
        self.name = name or "+".join(p.name for p in flat)
        self.replay = any(p.replay for p in flat)
        self.selection = selections.pop() if selections else "random"
        self.needs_teacher = any(p.needs_teacher for p in flat)
        self.needs_logits = any(p.needs_logits for p in flat)
        self.needs_arrays = any(p.needs_arrays for p in flat)
        self.remembers = any(p.remembers for p in flat)

    # Parts may change these between stages: read them each time.
    @property
    def trains_head(self):
        return all(p.trains_head for p in self._parts)

    @property
    def trains_body(self):
        return all(p.trains_body for p in self._parts)

    @property
    def parts(self):
        return list(self._parts)

    def adopt(self, context):
        for part in self._parts:
            part.adopt(context)

    def begin_stage(self, context):
        for part in self._parts:
            part.begin_stage(context)

    def loss(self, context, x, y, y_pred):
        terms = [p.loss(context, x, y, y_pred) for p in self._parts]
        terms = [t for t in terms if t is not None]
        if not terms:
            return None
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def weigh(self, context, labels, sample_weight):
        for part in self._parts:
            sample_weight = part.weigh(context, labels, sample_weight)
        return sample_weight

    def observe(self, context, features, labels, sample_weight):
        for part in self._parts:
            part.observe(context, features, labels, sample_weight)

    def trace_signature(self, context):
        return tuple(p.trace_signature(context) for p in self._parts)

    def stage_variables(self):
        return [v for p in self._parts for v in p.stage_variables()]

    def end_stage(self, context):
        for part in self._parts:
            part.end_stage(context)

    def predict(self, context, x):
        for part in self._parts:
            indices = part.predict(context, x)
            if indices is not None:
                return indices
        return None

    def remember(self, context, x, labels):
        for part in self._parts:
            if part.remembers:
                part.remember(context, x, labels)

    def score_layers(self, context):
        layers = {}
        for part in self._parts:
            layers.update(part.score_layers(context))
        return layers

    def get_state(self):
        return {
            f"{index}:{name}": value
            for index, part in enumerate(self._parts)
            for name, value in part.get_state().items()
        }

    def set_state(self, state):
        for index, part in enumerate(self._parts):
            prefix = f"{index}:"
            part.set_state(
                {
                    name[len(prefix) :]: value
                    for name, value in state.items()
                    if name.startswith(prefix)
                }
            )

    def check_state(self, model, head):
        for part in self._parts:
            part.check_state(model, head)

    def state_shapes(self, model, head):
        shapes = {}
        for index, part in enumerate(self._parts):
            declared = part.state_shapes(model, head)
            if declared is None:
                if type(part).get_state is not Strategy.get_state:
                    # This part's arrays take the reader's default bound.
                    shapes[f"{index}:*"] = None
                continue
            for name, shape in declared.items():
                shapes[f"{index}:{name}"] = shape
        return shapes

    def get_config(self):
        return {"name": self.name}

    def __repr__(self):
        inner = ", ".join(repr(p) for p in self._parts)
        return f"Combine({inner}, name={self.name!r})"


def traces_step(strategy):
    """Whether `strategy` (a single part) puts anything into the train step:
    its own `loss`, `weigh` or `observe`."""
    return any(
        getattr(type(strategy), hook) is not getattr(Strategy, hook)
        for hook in ("loss", "weigh", "observe")
    )


def observes(strategy):
    """Whether a part of `strategy` has its own `observe`."""
    return any(
        type(part).observe is not Strategy.observe for part in strategy.parts
    )
