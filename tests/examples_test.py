"""The examples run end to end (small settings, fresh processes)."""

import ast
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import testing_utils

from keras_mpe import _compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(script, *args, env=None):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), *args],
        capture_output=True,
        text=True,
        env=env or QUIET,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_criteo_ctr_trains_converts_and_exports(tmp_path):
    export = tmp_path / "ctr" / "1"
    out = _run(
        "criteo_ctr.py",
        *("--rows", "6000", "--max-cardinality", "300", "--epochs", "3"),
        *("--search-epochs", "1", "--batch-size", "500", "--model", "dcn"),
        *("--export-dir", str(export), "--target-bits", "1.5"),
    )
    assert (export / "saved_model.pb").exists()
    # The named size: at most 1.5 bits per element, filled to within a
    # few groups' worth (the smallest step raises one group).
    average = float(re.search(r"search outcome: (\S+) bits", out).group(1))
    assert 1.2 < average <= 1.5, average
    assert "rows per bits" in out  # the compression report
    # The picture of the bits per group, next to the export.
    assert (export.parent / "bits_per_group.png").exists()
    assert f"drawn in {export.parent / 'bits_per_group.png'}" in out
    retrained = re.search(r"MPE \(retrained\): AUC (\S+)", out).group(1)
    converted = re.search(r"MPE \(converted\): AUC (\S+)", out).group(1)
    assert retrained == converted
    assert float(re.search(r"fp32 +: AUC (\S+)", out).group(1)) > 0.5
    # Both models report their best validation epoch; MPE's is one of
    # the retraining epochs (2 and 3), never the search epoch.
    restored = re.findall(r"the end of the best epoch: (\d+)", out)
    assert len(restored) == 2 and int(restored[1]) >= 2, restored


@pytest.mark.slow
def test_criteo_ctr_names_the_auc_drop(tmp_path):
    out = _run(
        "criteo_ctr.py",
        *("--rows", "6000", "--max-cardinality", "300", "--epochs", "3"),
        *("--search-epochs", "2", "--batch-size", "500"),
        *("--export-dir", str(tmp_path / "1"), "--max-metric-drop", "0.01"),
        *("--layout", "bytes"),
    )
    # The sizes tried: the largest, then the bit penalty's; a larger one
    # only when the penalty's costs more than the drop.
    tried = re.search(r"within 0\.01\): (\[.*?\]); chose", out).group(1)
    trials = ast.literal_eval(tried)
    average = float(re.search(r"search outcome: (\S+) bits", out).group(1))
    assert all(level >= trials[1][0] - 1e-6 for level, _, _ in trials)
    if trials[1][2]:
        assert "chose the bit penalty's size" in out
        assert abs(average - trials[1][0]) < 1e-3, (average, trials)
    else:
        chosen = re.search(r"chose (\S+) bits per element", out).group(1)
        assert trials[1][0] < average <= float(chosen) + 1e-6, (average, out)
    # The speed-first layout serves what the retrained model computes.
    retrained = re.search(r"MPE \(retrained\): AUC (\S+)", out).group(1)
    converted = re.search(r"MPE \(converted\): AUC (\S+)", out).group(1)
    assert retrained == converted


@pytest.mark.slow
@testing_utils.needs_legacy_keras
def test_tfrs_movielens_on_a_small_ratings_file(tmp_path):
    rng = np.random.default_rng(0)
    rows = 3000
    users = np.minimum(rng.zipf(1.3, rows), 200)
    movies = np.minimum(rng.zipf(1.2, rows), 300)
    ratings = rng.integers(1, 6, rows)
    lines = [
        f"{u}\t{m}\t{r}\t{880000000 + i}"
        for i, (u, m, r) in enumerate(zip(users, movies, ratings, strict=True))
    ]
    (tmp_path / "u.data").write_text("\n".join(lines) + "\n")
    export = tmp_path / "ranking" / "1"
    out = _run(
        "tfrs_movielens.py",
        *("--data", str(tmp_path), "--epochs", "2", "--search-epochs", "1"),
        *("--num-groups", "8", "--export-dir", str(export)),
    )
    assert (export / "saved_model.pb").exists()
    retrained = re.search(r"MPE \(retrained\): (\S+)", out).group(1)
    converted = re.search(r"MPE \(converted\): (\S+)", out).group(1)
    assert retrained == converted
    assert "payload compression" in out
    # Both models report their best validation epoch; MPE's is one of
    # the retraining epochs (2 and 3), never the search epoch.
    restored = re.findall(r"the end of the best epoch: (\d+)", out)
    assert len(restored) == 2 and int(restored[1]) >= 2, restored


@pytest.mark.slow
@pytest.mark.skipif(
    not _compat.IS_KERAS_3,
    reason="keras-rs layers need Keras 3 (unset TF_USE_LEGACY_KERAS)",
)
def test_keras_rs_ranking_trains_converts_and_exports(tmp_path):
    pytest.importorskip(
        "keras_rs", reason='needs keras-rs: pip install -e ".[keras-rs]"'
    )
    export = tmp_path / "ranking" / "1"
    out = _run(
        "keras_rs_ranking.py",
        *("--rows", "6000", "--max-cardinality", "300", "--epochs", "3"),
        *("--search-epochs", "2", "--batch-size", "500"),
        *("--export-dir", str(export)),
    )
    assert (export / "saved_model.pb").exists()
    retrained = re.search(r"MPE \(retrained\): AUC (\S+)", out).group(1)
    converted = re.search(r"MPE \(converted\): AUC (\S+)", out).group(1)
    assert retrained == converted
    assert "served predictions match the converted model on 750 test" in out
    compression = re.search(r"compression +: (\S+)x payload", out).group(1)
    assert float(compression) > 1.0, compression


@pytest.mark.slow
@testing_utils.needs_legacy_keras
def test_distributed_ps_trains_on_an_in_process_cluster(tmp_path):
    export = tmp_path / "ps" / "1"
    out = _run(
        "distributed_ps.py",
        *("--rows", "4000", "--epochs", "1", "--search-epochs", "2"),
        *("--export-dir", str(export)),
    )
    assert "in shards of [" in out
    assert "chosen bits per group" in out
    assert (export / "saved_model.pb").exists()
    assert "served predictions of 500 test rows" in out


@pytest.mark.parametrize(
    "script, expected",
    [
        (
            "criteo_ctr.py",
            ["--target-bits:", "--batch-size:", "'2048'", "--layout:"],
        ),
        ("tfrs_movielens.py", ["--data:", "--search-epochs:", "'0.003'"]),
        ("tfrs_retrieval.py", ["--data:", "--top-k:", "'0.01'"]),
        ("serving_client.py", ["--model-dir:", "--[no]dry-run:", "'4'"]),
        ("distributed_ps.py", ["--workers:", "--ps:", "--layout:"]),
    ],
)
def test_help_lists_the_flags_with_their_defaults(script, expected):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), "--help"],
        capture_output=True,
        text=True,
        env=QUIET,
        timeout=300,
    )
    for text in [*expected, "(default: "]:
        assert text in result.stdout, (text, result.stdout[-3000:])


def test_tfrs_movielens_names_a_missing_data_folder(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "tfrs_movielens.py"),
            "--data",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env={**QUIET, "TF_USE_LEGACY_KERAS": "1"},
        timeout=300,
    )
    assert result.returncode != 0
    assert f"--data {tmp_path}: no u.data there" in result.stderr


@pytest.mark.slow
@testing_utils.needs_legacy_keras
def test_tfrs_retrieval_serves_the_in_process_top_k(tmp_path):
    ratings = testing_utils.shared_file("movielens", "ml-100k", "u.data")
    export = tmp_path / "retrieval" / "1"
    out = _run(
        "tfrs_retrieval.py",
        *("--data", str(ratings.parent), "--dim", "16", "--epochs", "1"),
        *("--search-epochs", "2", "--num-groups", "8"),
        *("--batch-size", "2048", "--export-dir", str(export)),
    )
    assert (export / "saved_model.pb").exists()
    for model in ("fp32", "MPE (retrained)"):
        line = re.search(rf"^{re.escape(model)} *: (.*)$", out, re.M)
        assert line, (model, out[-3000:])
        recalls = [float(r) for r in re.findall(r"@\d+ (\S+)", line[1])]
        assert len(recalls) == 3 and recalls == sorted(recalls), recalls
        assert recalls[2] > 0.15, recalls  # at random: 100 / 1653 movies
    compressions = re.findall(r"(\S+)x payload compression", out)
    assert len(compressions) == 2, out[-3000:]  # the user and movie towers
    assert all(float(x) > 1.0 for x in compressions), compressions
    assert "served top-10 equals the in-process index's: True" in out
    assert re.search(r"user 0: top-5 movie ids \[(\d+, ){4}\d+\]", out)
    # The user table is served packed: no float matrix has a row per user
    # (the BruteForce index is the one float matrix, a row per movie).
    users = int(re.search(r"'user_id': (\d+)", out)[1])
    reader = tf.train.load_checkpoint(str(export / "variables" / "variables"))
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    floats = [shapes[k] for k, t in dtypes.items() if t == tf.float32]
    assert [users, 16] not in floats, floats
    assert tf.uint8 in dtypes.values(), dtypes


def test_serving_client_dry_run_prints_the_rest_body(tmp_path):
    from export_test import functional

    import keras_mpe

    path = keras_mpe.export_saved_model(
        keras_mpe.convert(functional()), str(tmp_path / "ctr" / "1")
    )
    out = _run("serving_client.py", "--model-dir", path, "--dry-run")
    assert '"instances": [{"ids": [' in out
