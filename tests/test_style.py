import pathlib
import subprocess
import sys

import pytest

import keras_incremental as ki

pytestmark = pytest.mark.backend_independent

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ruff_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_version_in_one_place():
    assert ki.__version__
    config = (ROOT / "setup.cfg").read_text()
    assert "version = attr: keras_incremental.__version__" in config


def test_no_pickle_and_no_private_keras_imports_outside_compat():
    for path in (ROOT / "keras_incremental").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text, path
        assert "allow_pickle=True" not in text, path
        if path.name != "compat.py":
            assert "keras.src" not in text, path
