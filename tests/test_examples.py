import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.end_to_end
def test_staged_digits_example_runs_and_learns(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "staged_digits", ROOT / "examples" / "staged_digits.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    accuracies = example.main(["--epochs", "2", "--folder", str(tmp_path)])
    output = capsys.readouterr().out
    assert output.count("stage ") == 5
    assert "['zero', 'one']" in output
    assert (tmp_path / "stages.keras").exists()
    assert len(accuracies) == 5
    # With replay the run keeps most of what it learned (finetuning alone
    # ends near 0.2 on ten classes).
    assert accuracies[-1] > 0.7
