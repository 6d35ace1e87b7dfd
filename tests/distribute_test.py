"""Training under ParameterServerStrategy on an in-process cluster (2
workers, 2 parameter servers, tables in 2 shards), each check in a fresh
process (`parameter_server_check.py`): the cluster's servers and its
eager context last as long as the process."""

import os
import subprocess
import sys

import pytest
import testing_utils

from keras_mpe import _compat

CHECK = os.path.join(os.path.dirname(__file__), "parameter_server_check.py")


def _check(*args):
    result = subprocess.run(
        [sys.executable, CHECK, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.rstrip().endswith("all checks passed"), result.stdout
    return result.stdout


@pytest.mark.slow
@testing_utils.needs_legacy_keras
def test_sharded_table_trains_counts_converts_and_exports(tmp_path):
    """Lookups in id order across shards; counts equal the true counts;
    the bits equal an unsharded layer's from the same counts and logits;
    trained, converted and exported predictions agree."""
    _check("train", str(tmp_path))


@pytest.mark.skipif(not _compat.IS_KERAS_3, reason="tf_keras trains under it")
def test_keras_3_is_refused_with_what_to_use():
    out = _check("refuse")
    assert "Keras 3 cannot train with" in out
    assert "ParameterServerStrategy" in out
    assert "TF_USE_LEGACY_KERAS=1" in out
