"""`IncrementalModel`'s options: checked whenever they are set, the ones
that cannot change refused, and the run state as one schema."""

import keras
import numpy as np
import pytest
from helpers import compiled_mlp
from helpers import data

import keras_incremental as ki
from keras_incremental.callbacks import options
from keras_incremental.callbacks.options import Option
from keras_incremental.saving.run_state import RunState


def test_every_option_is_a_checked_attribute():
    names = {
        name
        for name, value in vars(ki.IncrementalModel).items()
        if isinstance(value, Option)
    }
    assert names == set(options.CHECKS)
    inc = ki.IncrementalModel()
    for name in options.CHECKS:
        assert getattr(inc, name) is getattr(inc.options, name)


@pytest.mark.parametrize(
    "name, value, error, pattern",
    [
        ("strategy", "magic", ValueError, "Unknown strategy"),
        ("strategy", 3, TypeError, "Expected `strategy`"),
        ("checkpoint", "run/stages.h5", ValueError, "ending in '.keras'"),
        ("freeze", 3, TypeError, "freeze"),
        ("learning_rates", {"body": float("nan")}, ValueError, "> 0"),
        ("learning_rates", {"body": True}, ValueError, "> 0"),
        ("evaluation", (np.zeros((3, 2)), [1, 2]), ValueError, "one label"),
        ("report", "report.txt", ValueError, "ending in '.json'"),
        ("export_dir", 3, TypeError, "export_dir"),
        ("capacity", "big", ValueError, "capacity"),
        ("capacity", 0, ValueError, "capacity"),
    ],
)
def test_a_bad_option_is_refused_when_set(name, value, error, pattern):
    inc = ki.IncrementalModel(memory_size=10)
    before = getattr(inc, name)
    with pytest.raises(error, match=pattern):
        setattr(inc, name, value)
    assert getattr(inc, name) is before


@pytest.mark.parametrize(
    "name, value", [("memory_size", 20), ("seed", 3), ("head", "other")]
)
def test_options_the_run_is_made_with_cannot_change(name, value):
    inc = ki.IncrementalModel(memory_size=10, seed=1, head="head")
    before = getattr(inc, name)
    with pytest.raises(ValueError, match=f"`{name}` cannot change"):
        setattr(inc, name, value)
    assert getattr(inc, name) == before
    setattr(inc, name, before)  # the same value is no change
    with pytest.raises(TypeError):
        setattr(inc, name, "x" if name != "head" else 3)


def test_a_strategy_set_between_stages_is_used(tmp_path):
    keras.utils.set_random_seed(0)
    model = compiled_mlp(units=0)
    path = tmp_path / "stages.keras"
    inc = ki.IncrementalModel(model=model, memory_size=20, checkpoint=str(path))
    x, y = data(48, classes=2)
    model.fit(*inc.prepare(x, y), epochs=1, verbose=0, callbacks=[inc])
    inc.strategy = "finetune"
    assert inc.strategy.name == "finetune"
    x, y = data(48, classes=3, seed=1)
    xs, ys = inc.prepare(x, y)
    assert len(xs) == len(x)  # fine-tuning replays nothing
    model.fit(xs, ys, epochs=1, verbose=0, callbacks=[inc])
    _, restored = ki.IncrementalModel.restore(str(path))
    assert restored.strategy.name == "finetune"
    assert restored.memory_size == 20


def test_the_run_state_reads_back_what_it_writes(tmp_path):
    state = RunState(
        stage=2,
        run="abc",
        classes=("a", "b", "c"),
        settings={
            "strategy": {"name": "finetune", "parts": []},
            "memory_size": 5,
            "head": None,
            "freeze": ["body"],
            "learning_rates": {"body": 0.5},
            "seed": 3,
        },
        history=(
            {"stage": 0, "classes": ["a", "b"], "row": [1.0], "accuracy": 1.0},
            {
                "stage": 1,
                "classes": ["c"],
                "row": [0.5, float("nan")],
                "accuracy": 0.75,
            },
        ),
        stage_classes=((0, 1), (2,)),
        groups={0.5: ["body"]},
        base_rate=0.001,
        exported=1,
        evaluation=True,
        freeze_callable=False,
    )
    back = RunState.from_json({"format": 2, **state.to_json()}, "x.keras")
    assert back.to_json() == state.to_json()
    assert back.classes == state.classes
    assert [list(g) for g in back.stage_classes] == [[0, 1], [2]]
    assert np.isnan(back.history[1]["row"][1])
    with pytest.raises(ValueError, match="'history' has 1 entries"):
        RunState.from_json(
            {"format": 2, **state.replace(history=state.history[:1]).to_json()},
            "x.keras",
        )


def test_the_old_module_paths_are_attributes_of_the_package():
    # `ki.serving.exported_versions(...)`, as the serving guide writes it.
    from keras_incremental.models import transfer
    from keras_incremental.optimizers import multiplier_optimizer
    from keras_incremental.saving import serving
    from keras_incremental.utils import patterns

    assert ki.serving.exported_versions is serving.exported_versions
    assert ki.serving.export_for_serving is serving.export_for_serving
    assert ki.transfer.TransferReport is transfer.TransferReport
    assert ki.patterns.compile_pattern is patterns.compile_pattern
    assert (
        ki.multiplier_optimizer.MultiplierOptimizer
        is multiplier_optimizer.MultiplierOptimizer
    )
