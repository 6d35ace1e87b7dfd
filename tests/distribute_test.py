"""Training under ParameterServerStrategy on an in-process cluster (2
workers, 2 parameter servers, tables in 2 shards), each check in a fresh
process (`parameter_server_check.py`): the cluster's servers and its
eager context last as long as the process. Counting under
MultiWorkerMirroredStrategy with 2 worker processes on this machine
(`multi_worker_check.py`)."""

import os
import socket
import subprocess
import sys

import pytest
import testing_utils

from keras_mpe import _compat

HERE = os.path.dirname(__file__)
CHECK = os.path.join(HERE, "parameter_server_check.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _check(*args):
    result = subprocess.run(
        [sys.executable, CHECK, *args],
        capture_output=True,
        text=True,
        env=ENV,
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_counts_are_summed_over_the_workers_shards():
    """Each of 2 workers counts part of the data; every worker ends with
    the whole data set's counts (checked in the worker)."""
    ports = [str(_free_port()) for _ in range(2)]
    command = [sys.executable, os.path.join(HERE, "multi_worker_check.py")]
    workers = [
        subprocess.Popen(
            [*command, str(index), *ports],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for index in range(2)
    ]
    local = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        assert out.rstrip().endswith("all checks passed"), out
        local.append(int(out.split("local lookups ")[1].split()[0]))
    # 2,000 rows of 4 ids, split between the workers.
    assert sum(local) == 8000 and 0 < min(local), local
