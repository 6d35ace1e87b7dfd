"""The quality benchmark (benchmarks/quality): AUC, the heuristic's
budget, the post-training per-row round trip, the summaries, and the
methods' training schedules on tiny data."""

import copy

import numpy as np
import pytest
import tensorflow as tf

import keras_mpe
from benchmarks.quality import cli
from benchmarks.quality import measure
from benchmarks.quality import methods
from benchmarks.quality import readers
from benchmarks.quality import runs
from benchmarks.quality import summary
from benchmarks.quality import training

keras = tf.keras


def test_auc_golden_values():
    labels = np.array([0, 0, 1, 1], np.float64)
    # Pairs (positive, negative) ranked right: 3 of 4 -> 0.75.
    assert measure.auc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    # Ties count one half: (0.5 + 1 + 1 + 1) / 4.
    assert measure.auc(labels, np.array([0.1, 0.5, 0.5, 0.8])) == 0.875
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    labels = (rng.random(500) < scores).astype(np.float64)
    pairs = scores[labels == 1][:, None] > scores[labels == 0][None, :]
    assert measure.auc(labels, scores) == pytest.approx(pairs.mean())


def test_bits_by_frequency_fits_the_budget_and_rises_with_frequency():
    frequency = np.array([0.0, 0.5, 1, 2, 4, 8, 16, 32, 64, 1000])
    rows = np.array([50, 20, 10, 8, 5, 3, 2, 1, 1, 1])
    for budget in (0.5, 1.0, 2.0, 2.9):
        bits = methods.bits_by_frequency(
            frequency, rows, methods.CANDIDATES, budget
        )
        average = np.dot(bits, rows) / rows.sum()
        assert average <= budget
        assert average > budget - 0.5  # uses most of the budget
        assert bits[0] == 0  # never looked up
        assert (np.diff(bits) >= 0).all()
        assert set(bits) <= set(methods.CANDIDATES)
    assert bits[-1] == 6


def test_per_row_round_trip_matches_keras_quantize():
    table = np.random.default_rng(1).normal(size=(50, 16)).astype(np.float32)
    table[3] = 0.0  # an all-zero row keeps its zeros
    for bits in (8, 4):
        restored = methods.per_row_round_trip(table, bits)
        np.testing.assert_array_equal(restored[3], 0.0)
        levels = 2**bits - 1
        span = table.max(1, keepdims=True) - table.min(1, keepdims=True)
        assert np.abs(restored - table).max() <= (span / levels).max()
    if methods.KERAS_3:
        layer = keras.layers.Embedding(50, 16)
        layer.build((None,))
        layer.set_weights([table])
        layer.quantize("int8")
        ids = np.arange(50)
        np.testing.assert_allclose(
            methods.per_row_round_trip(table, 8),
            np.asarray(layer(ids)),
            atol=1e-6,
        )


def test_summarize_and_markdown():
    rows = [
        {
            "method": m, "seed": s, "auc": a, "logloss": 0.5,
            "payload_compression": c, "real_compression": c,
            "train_time_vs_fp32": 1.0, "predict_time_vs_fp32": 1.0,
        }
        for m, s, a, c in (
            ("fp32", 0, 0.70, 1), ("fp32", 1, 0.76, 1), ("mpe", 0, 0.72, 30),
            ("mpe", 1, 0.74, 34), ("int8", 0, 0.69, 4),
        )
    ]  # fmt: skip
    entries = summary.summarize(rows, ["auc", "logloss"])
    assert [e["method"] for e in entries] == ["fp32", "mpe", "int8"]
    assert entries[1]["auc"] == pytest.approx((0.73, 0.01))
    assert entries[1]["payload_compression"][0] == 32
    # Paired by seed: differences +0.02 and -0.02 -> mean 0, standard
    # error std(ddof=1) / sqrt(2) = 0.02; one seed has no spread.
    assert entries[0]["vs_fp32"] == (0.0, 0.0)
    assert entries[1]["vs_fp32"] == pytest.approx((0.0, 0.02))
    assert entries[2]["vs_fp32"] == pytest.approx((-0.01, 0.0))
    table = summary.markdown(entries, ["auc", "logloss"], "### t")
    assert (
        "| mpe | 2 | 0.7300 +- 0.0100 | 0.5000 +- 0.0000 | +0.0000 +- 0.0200 "
        "| 32.0 |"
    ) in table
    without_fp32 = summary.summarize(rows[2:4], ["auc", "logloss"])
    assert without_fp32[0]["vs_fp32"] is None
    assert "| 0.5000 +- 0.0000 | - | 32.0 |" in summary.markdown(
        without_fp32, ["auc", "logloss"], "### t"
    )


def test_defaults_follow_the_data():
    criteo, synthetic, movielens = (
        cli.parse_args(["--data", name])
        for name in ("criteo", "synthetic", "movielens")
    )
    assert (criteo.epochs, criteo.batch_size, criteo.mlp) == (
        6, 250, [1024, 512, 256],
    )  # fmt: skip
    assert (synthetic.epochs, synthetic.batch_size, synthetic.mlp) == (
        2, 4096, [256, 128],
    )  # fmt: skip
    # The layer's own temperature (set from the search's length).
    assert (criteo.temperature, synthetic.temperature) == (None, None)
    assert criteo.dense_init == "reference"
    assert movielens.batch_size == 1024
    assert movielens.out == "benchmarks/results/movielens"


def test_defaults_flag_runs_mpe_as_a_user_gets_it():
    args = cli.parse_args(["--defaults"])
    assert args.methods == {"fp32", "mpe"}
    assert args.penalties == [1e-3]  # the layer's default
    assert (args.temperature, args.target_bits) == (None, None)
    assert args.max_metric_drop == cli.DEFAULTS_METRIC_DROP == 0.002
    with pytest.raises(SystemExit):
        cli.parse_args(["--defaults", "--temperature", "0.1"])


def test_dense_layers_start_as_the_reference_or_as_keras():
    ids = np.zeros((4, 3), np.int32)
    train = tf.data.Dataset.from_tensor_slices(
        ({"categorical": ids}, np.zeros(4, np.float32))
    ).batch(2)
    data = readers.Data(train, train, train, 10, rating=False)
    for init in ("reference", "glorot"):
        args = cli.parse_args(["--mlp", "64", "--dense-init", init])
        model = training.backbone(keras.layers.Embedding(10, 2), data, args)
        dense = [x for x in model.layers if type(x).__name__ == "Dense"]
        for layer, fan_in in zip(dense, (6, 64), strict=True):
            kernel, bias = (w.numpy() for w in layer.weights)
            bound = 1 / np.sqrt(fan_in)
            if init == "reference":  # PyTorch's nn.Linear
                assert np.abs(kernel).max() <= bound
                assert np.abs(bias).max() <= bound and bias.any()
            else:  # Glorot: wider for the 64 -> 1 output layer
                assert not bias.any()
        if init == "glorot":
            assert np.abs(kernel).max() > 1 / np.sqrt(64)


def test_backbone_follows_mlp_and_batchnorm_flags():
    with_norm = cli.parse_args(["--data", "criteo", "--mlp", "8,4"])
    linear = cli.parse_args(["--mlp", "", "--no-batchnorm"])
    assert (with_norm.mlp, with_norm.batchnorm) == ([8, 4], True)
    assert (linear.mlp, linear.batchnorm) == ([], False)
    ids = np.zeros((4, 3), np.int32)
    train = tf.data.Dataset.from_tensor_slices(
        ({"categorical": ids}, np.zeros(4, np.float32))
    ).batch(2)
    data = readers.Data(train, train, train, 10, rating=False)
    without_norm = copy.copy(with_norm)
    without_norm.batchnorm = False
    cases = [(with_norm, 3, 2), (without_norm, 3, 0), (linear, 1, 0)]
    for args, dense, norms in cases:
        model = training.backbone(keras.layers.Embedding(10, 2), data, args)
        kinds = [type(layer).__name__ for layer in model.layers]
        assert kinds.count("Dense") == dense, kinds
        assert kinds.count("BatchNormalization") == norms, kinds


@pytest.mark.parametrize(
    "flags, expected",
    [
        ((), (True, True)),
        (("--no-rewind",), (False, True)),
        (("--no-rewind-network",), (True, False)),
    ],
)
def test_pipeline_rewinds_unless_told_not_to(monkeypatch, flags, expected):
    args = cli.parse_args([
        "--mlp", "4", "--num-groups", "2", "--epochs", "1",
        "--search-epochs", "2", *flags,
    ])  # fmt: skip
    rewinds = []

    class Spy(keras_mpe.MPECallback):
        def __init__(self, *args, **kwargs):
            rewinds.append(
                (kwargs["rewind_embeddings"], kwargs["rewind_network"])
            )
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(keras_mpe, "MPECallback", Spy)
    row = methods.run_pipeline(
        "mpe", _tiny_data(), args, methods.CANDIDATES, 0.0
    )
    assert rewinds == [expected]
    assert row["payload_compression"] >= 32 / 6


def _tiny_data():
    rng = np.random.default_rng(0)
    train = tf.data.Dataset.from_tensor_slices(
        (
            {"categorical": rng.integers(0, 10, (16, 3)).astype(np.int32)},
            rng.integers(0, 2, 16).astype(np.float32),
        )
    ).batch(8)
    return readers.Data(train, train, train, 10, rating=False)


class _Phases(keras.callbacks.Callback):
    """Records the phase of the MPE layer at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.phases = []

    def on_epoch_end(self, epoch, logs=None):
        (layer,) = keras_mpe.find_layers(self.model)
        self.phases.append(layer.phase.name)


@pytest.mark.parametrize("warmup", [0, 1])
def test_fixed_bits_start_after_the_warmup(monkeypatch, warmup):
    args = cli.parse_args([
        "--mlp", "4", "--num-groups", "2", "--epochs", "2",
        "--fixed-warmup-epochs", str(warmup),
    ])  # fmt: skip
    recorder = _Phases()
    fit = training.fit
    monkeypatch.setattr(
        training,
        "fit",
        lambda *a, callbacks=(), **k: fit(
            *a, callbacks=[*callbacks, recorder], **k
        ),
    )
    row = methods.run_fixed(
        "qat4", lambda layer: np.full(2, 4), _tiny_data(), args, (4,)
    )
    assert recorder.phases == ["FLOAT"] * warmup + ["FIXED"] * 2
    assert row["payload_compression"] == 8


class _Scripted(keras.callbacks.Callback):
    """Overwrites each epoch's monitored metric with a scripted value and
    keeps each epoch's weights."""

    def __init__(self, monitor, values):
        super().__init__()
        self.monitor, self.values, self.weights = monitor, values, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.monitor] = self.values[epoch]
        self.weights.append(self.model.get_weights())


@pytest.mark.parametrize(
    "rating, start, best",
    [(False, 0, 0), (False, 2, 2), (False, 3, 4), (True, 0, 1), (True, 2, 3)],
)
def test_fit_keeps_the_best_validation_epoch_from_start_on(rating, start, best):
    values = [0.9, 0.5, 0.7, 0.6, 0.65]  # AUC: max wins; RMSE: min wins
    train = _tiny_data().train
    data = readers.Data(train, train, train, 10, rating=rating)
    args = cli.parse_args(["--mlp", "4"])
    model = training.backbone(keras.layers.Embedding(10, 2), data, args)
    script = _Scripted(data.monitor, values)
    seconds = training.fit(model, data, len(values), start, [script])
    assert len(seconds) == len(values) and min(seconds) > 0
    for kept, expected in zip(
        model.get_weights(), script.weights[best], strict=True
    ):
        np.testing.assert_array_equal(kept, expected)
    if best < len(values) - 1:  # the weights were restored
        last = script.weights[-1]
        assert any(
            not np.array_equal(a, b)
            for a, b in zip(script.weights[best], last, strict=True)
        )


def test_negative_warmup_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--fixed-warmup-epochs", "-1"])
    assert "--fixed-warmup-epochs must be 0 or more" in capsys.readouterr().err


def test_mpe_runs_meet_the_target_bits():
    args = cli.parse_args([
        "--mlp", "4", "--num-groups", "4", "--epochs", "1",
        "--search-epochs", "2", "--methods", "mpe", "--penalties", "0",
        "--target-bits", "1.5",
    ])  # fmt: skip
    (fp32, mpe) = runs.run_seed(_tiny_data(), args, seed=0)
    assert mpe["method"] == "mpe@0/1.5b"
    assert 0 < mpe["average_bits"] <= 1.5
