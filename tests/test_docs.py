"""The documentation: the MkDocs site builds, and the tutorial runs."""

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ORDER = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
]
NAMES = set(ORDER)


def _python_blocks(path):
    text = path.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def _line(output, prefix):
    """The rest of the last printed line that starts with `prefix`."""
    for line in reversed(output.splitlines()):
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"no line starting with {prefix!r} in:\n{output}")


def _percent(output, prefix):
    return float(_line(output, prefix).rstrip("%")) / 100


@pytest.mark.backend_independent
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "tutorial" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in (
        "keras_incremental.ExpandableDense",
        "keras_incremental.IncrementalModel.restore",
        "keras_incremental.IncrementalModel.adopt",
        "keras_incremental.IncrementalModel.remember",
        "keras_incremental.IncrementalModel.encode",
        "keras_incremental.IncrementalModel.class_weight",
        "keras_incremental.strategies.Combine",
        "keras_incremental.export_for_serving",
    ):
        assert f'id="{name}"' in api, name


@pytest.mark.end_to_end
def test_tutorial_runs(tmp_path):
    pytest.importorskip("sklearn")
    blocks = _python_blocks(ROOT / "docs" / "tutorial.md")
    assert len(blocks) >= 5
    script = tmp_path / "tutorial.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    out = result.stdout

    # The plain classifier is adopted as it is: same predictions, its names
    # in column order, and a memory filled from the old data.
    assert _line(out, "adopted head:") == "ExpandableDense 8"
    assert _line(out, "unchanged:") == "True"
    assert ast.literal_eval(_line(out, "adopted classes:")) == ORDER[:8]
    assert _percent(out, "before, zero..seven:") > 0.9
    assert _line(out, "remembered:") == "200 samples"

    # The head grew from 8 to 10 units, the new names at the end.
    assert _line(out, "head units:") == "10"
    assert ast.literal_eval(_line(out, "classes:")) == ORDER

    # Replay keeps the old classes; plain fine-tuning forgets them.
    assert _percent(out, "old classes, zero..seven:") > 0.85
    assert _percent(out, "new classes, eight, nine:") > 0.6
    assert _percent(out, "all ten classes:") > 0.85
    assert _percent(out, "validation accuracy:") > 0.85
    assert _percent(out, "fine-tuned only, zero..seven:") < 0.3

    # The checkpoint resumes the run as it was.
    assert "restored after stage 2: 10 classes, 200 stored samples" in out
    assert _line(out, "same predictions:") == "True"
    assert (tmp_path / "run" / "stages.keras").is_file()
    assert (tmp_path / "classifier.keras").is_file()

    # The serving signature answers with class names.
    assert _line(out, "exported to") == os.path.join("run", "serving", "1")
    served = ast.literal_eval(_line(out, "served:"))
    assert len(served) == 5 and set(served) <= NAMES


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "page",
    sorted(
        str(path.relative_to(ROOT / "docs"))
        for path in (ROOT / "docs").rglob("*.md")
    ),
)
def test_python_blocks_are_valid_python(page):
    for number, block in enumerate(_python_blocks(ROOT / "docs" / page)):
        compile(block, f"{page} block {number}", "exec")
