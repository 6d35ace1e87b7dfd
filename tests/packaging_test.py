"""The package as users install it: a wheel that runs the main example."""

import glob
import os
import subprocess
import sys
import zipfile

import pytest

import keras_mpe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _check(command, **kwargs):
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, **kwargs
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_wheel_holds_every_module_and_runs_the_main_example(tmp_path):
    wheels = tmp_path / "wheels"
    _check(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", ROOT]
        + ["-w", str(wheels)]
    )
    (wheel,) = glob.glob(str(wheels / "*.whl"))
    name = f"keras_mpe-{keras_mpe.__version__}-py3-none-any.whl"
    assert os.path.basename(wheel) == name
    modules = sorted(
        os.path.relpath(path, ROOT).replace(os.sep, "/")
        for path in glob.glob(os.path.join(ROOT, "keras_mpe", "*.py"))
    )
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        metadata = next(f for f in files if f.endswith("METADATA"))
        text = archive.read(metadata).decode()
    assert [f for f in files if f.startswith("keras_mpe/")] == modules
    assert f"Version: {keras_mpe.__version__}" in text
    # Installed alone (dependencies from this environment), away from the
    # checkout: the main example runs on it.
    target = tmp_path / "site"
    _check(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        + ["--target", str(target), wheel]
    )
    env = {**QUIET, "PYTHONPATH": str(target)}
    where = _check(
        [sys.executable, "-c", "import keras_mpe; print(keras_mpe.__file__)"],
        cwd=tmp_path,
        env=env,
    )
    assert where.startswith(str(target)), where
    out = _check(
        [sys.executable, os.path.join(ROOT, "examples", "criteo_ctr.py")]
        + ["--rows", "3000", "--max-cardinality", "100", "--epochs", "2"]
        + ["--search-epochs", "1", "--batch-size", "500"]
        + ["--export-dir", str(tmp_path / "export" / "1")],
        cwd=tmp_path,
        env=env,
    )
    assert "MPE (converted): AUC" in out
