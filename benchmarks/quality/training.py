"""The backbone every method shares, and how each model is trained.

`backbone`: embeddings (+ numeric features) -> MLP (Dense, BatchNorm,
ReLU) -> sigmoid (CTR) or linear (ratings), compiled with Adam. Its Dense
layers start as the reference's (PyTorch's `nn.Linear` default: weights
and biases uniform in +-1 / sqrt(fan_in)) unless `--dense-init glorot`
(Keras' default: Glorot-uniform weights, zero biases). On the Criteo
sample the Glorot start makes the BatchNorm MLP's output layer 2.4x
larger at the start and costs about 0.03-0.05 AUC (benchmarks/RESULTS.md).
`fit`: `model.fit` that keeps the weights of the best validation epoch
from a given epoch on (Keras' `EarlyStopping` restoring the best weights,
never stopping) and returns the wall time of every epoch.
"""

import statistics
import time

import tensorflow as tf

keras = tf.keras


def backbone(embedding, data, args):
    """Embeddings (+ numeric) -> MLP (Dense, BatchNorm, ReLU) -> output.

    Args:
        embedding: The embedding layer (one table for every field).
        data: `readers.Data`; its element spec gives the inputs.
        args: The flags: `mlp` (hidden units), `batchnorm`,
            `dense_init`, `learning_rate`.

    Returns:
        A compiled functional model with inputs `categorical` (and
        `numeric` where the data has it) and metric `auc` or `rmse`.
    """
    features = data.train.element_spec[0]
    fields = features["categorical"].shape[-1]
    categorical = keras.Input((fields,), dtype="int32", name="categorical")
    inputs = {"categorical": categorical}
    x = keras.layers.Flatten()(embedding(categorical))
    if "numeric" in features:
        numeric = keras.Input((features["numeric"].shape[-1],), name="numeric")
        inputs["numeric"] = numeric
        x = keras.layers.Concatenate()([x, numeric])
    for units in args.mlp:
        x = _dense(units, x.shape[-1], args)(x)
        if args.batchnorm:
            x = keras.layers.BatchNormalization(momentum=0.9)(x)  # PyTorch's
        x = keras.layers.ReLU()(x)
    activation = None if data.rating else "sigmoid"
    model = keras.Model(inputs, _dense(1, x.shape[-1], args, activation)(x))
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        "mse" if data.rating else "binary_crossentropy",
        metrics=[
            keras.metrics.RootMeanSquaredError(name="rmse")
            if data.rating
            else keras.metrics.AUC(name="auc")
        ],
    )
    return model


def _dense(units, fan_in, args, activation=None):
    """A Dense layer started as `args.dense_init` says."""
    if args.dense_init == "glorot":
        return keras.layers.Dense(units, activation)
    bound = 1.0 / float(fan_in) ** 0.5
    return keras.layers.Dense(
        units,
        activation,
        kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound),
    )


def init(args):
    """The table initializer of every method: N(0, `args.init_std`^2)."""
    return keras.initializers.RandomNormal(stddev=args.init_std)


class EpochSeconds(keras.callbacks.Callback):
    """Records the wall time of every epoch, validation included."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def fit(model, data, epochs, start=0, callbacks=()):
    """Trains, keeps the best validation epoch from `start` on.

    Args:
        model: A compiled model.
        data: `readers.Data`; `data.monitor` and `data.mode` pick the best
            epoch.
        epochs: Integer. Epochs of the one `fit` call.
        start: Integer. The first epoch that may be kept (MPE: the first
            retraining epoch).
        callbacks: Callbacks that run before the timer (their
            `on_epoch_begin`, e.g. MPECallback's selection, is not timed).

    Returns:
        The seconds of every epoch.
    """
    timer = EpochSeconds()
    best = keras.callbacks.EarlyStopping(
        monitor=data.monitor,
        mode=data.mode,
        patience=epochs,  # never stops early, only restores the best
        start_from_epoch=start,
        restore_best_weights=True,
    )
    model.fit(
        data.train,
        validation_data=data.val,
        epochs=epochs,
        callbacks=[*callbacks, timer, best],
        verbose=0,
    )
    return timer.seconds


def median_seconds(seconds):
    """Median epoch time; the first epoch traces the step function, so it
    counts only when there is no other."""
    return statistics.median(seconds[1:] or seconds)
