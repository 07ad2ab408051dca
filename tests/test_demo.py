"""`keras-incremental demo`: the newcomer's command, run as a user would."""

import json
import os
import shutil
import subprocess
import sys

import pytest


def _command():
    script = shutil.which("keras-incremental")
    if script is None:  # not installed as a console script
        return [sys.executable, "-m", "keras_incremental.cli"]
    return [script]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "run"
    result = subprocess.run(
        [*_command(), "demo", "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return result, output


@pytest.mark.end_to_end
def test_demo_prints_stages_table_and_metrics(demo_run):
    result, output = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for number in range(1, 6):
        assert f"stage {number}/5" in out
    assert "['eight', 'nine']" in out
    assert "old classes" in out and "plain fine-tuning" in out
    assert "final accuracy on all 10 classes" in out
    assert "forgetting:" in out
    assert str(output.resolve()) in out


@pytest.mark.end_to_end
def test_demo_writes_checkpoint_report_and_serving_versions(demo_run):
    result, output = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / "stages.keras").is_file()
    report = json.loads((output / "report.json").read_text())
    assert len(report["accuracy_matrix"]) == 5
    assert sorted(report["classes"][:2]) == ["one", "zero"]
    # Ours remembers: well above plain fine-tuning, which ends near 20%.
    assert report["final_accuracy"] > 0.6
    versions = sorted(os.listdir(output / "serving"))
    assert versions == ["1", "2", "3", "4", "5"]
    assert (output / "serving" / "5" / "saved_model.pb").is_file()
    if _has_matplotlib():
        assert (output / "report.png").is_file()


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
