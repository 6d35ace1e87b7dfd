"""MPECallback: the schedule of a mixed-precision search inside `model.fit`.

Epochs of one `fit` call, with W = `warmup_epochs`, S = `search_epochs`:

| epochs     | what happens                                                |
|------------|-------------------------------------------------------------|
| train start| count id frequencies over `frequency_data`, group the rows  |
| 0 (begin)  | a new search: remember the table for the rewind, forget any |
|            | kept epoch, enter FLOAT                                     |
| 0 .. W-1   | FLOAT warm-up: the table learns before precisions compete   |
| W .. S-1   | SEARCH: step sizes set from the table's scale, then the     |
|            | per-group bit distributions learn under the bit penalty     |
| S          | select each group's bits (optionally from the best search   |
|            | epoch), rewind the table, reset the optimizer, enter FIXED  |
| S .. end   | FIXED: retrain at the chosen precisions, no penalty         |

Every step is decided from the epoch index and the layers' own state, so a
`fit` resumed from a checkpoint with `initial_epoch` picks up where it was.
"""

import warnings

import numpy as np
import tensorflow as tf

from keras_mpe import _compat
from keras_mpe import frequency
from keras_mpe.embedding import Phase
from keras_mpe.model_layers import find_layers
from keras_mpe.selection import SELECTION_RULES
from keras_mpe.selection import check_target_bits
from keras_mpe.selection import distance_from_uniform

keras = _compat.keras


class MPECallback(keras.callbacks.Callback):
    """Runs the MPE precision search and retraining during `model.fit`.

    Adds to the epoch logs (History, TensorBoard, progress bar):
    `mpe_phase` (0 float, 1 search, 2 fixed), `mpe_bits` (average bits per
    embedding element: 32 in float, expected in search, chosen in fixed)
    and `mpe_compression` (32 / `mpe_bits`, the payload compression).

    Example:

    ```python
    callback = keras_mpe.MPECallback(frequency_data=train_ds,
                                     search_epochs=8, monitor="val_auc")
    model.fit(train_ds, validation_data=val_ds, epochs=16,
              callbacks=[callback])
    ```

    Args:
        frequency_data: Iterable of training batches (a `tf.data.Dataset`),
            as given to `fit`. Streamed once at the start to count ids.
        search_epochs: Integer. Epochs before the precisions are chosen,
            warm-up included. `fit` must run more epochs than this.
        warmup_epochs: Integer from 0 to `search_epochs - 1`, or None for
            1 (0 when `search_epochs` is 1). Leading epochs in which the
            layers train as float embeddings, so that the precisions
            compete on a table that has learned something. 0 gives the
            reference schedule.
        selection: String. "threshold" (reference), "argmax" or "sample".
        seed: Integer or None. Seed of the "sample" selection.
        target_bits: Float or None. A size budget: each table's average
            bits per element after selection (32 / the compression you
            want, e.g. 0.32 for 100x). The groups then take bits in the
            order their learned distributions make most probable, while
            they fit (`selection.budget_bits`), so the bit penalty only
            shapes the search. Needs `selection="threshold"` (the
            default, which it replaces). None: the selection rule alone
            sets the size.
        monitor: String or None. A log key (e.g. "val_auc"); when given,
            each table's precision distribution and quantizer (step sizes,
            offset) are those of the best search epoch at selection (the
            table is rewound anyway; the rest of the model goes on from
            the last search epoch). They are kept as layer weights, so a
            run resumed from a checkpoint (`BackupAndRestore`) selects the
            same.
        mode: String. "min", "max" or "auto" (max for auc/accuracy keys).
        rewind_embeddings: Boolean. Reset the tables to their values at
            the start of training before retraining (reference).
        reset_optimizer: Boolean. Zero the optimizer state (all but the
            learning rate) before retraining.
        verbose: Integer. 1 prints the counting and selection outcome.
    """

    def __init__(
        self,
        frequency_data,
        search_epochs: int = 8,
        warmup_epochs=None,
        selection: str = "threshold",
        seed=None,
        target_bits=None,
        monitor=None,
        mode: str = "auto",
        rewind_embeddings: bool = True,
        reset_optimizer: bool = True,
        verbose: int = 1,
    ):
        super().__init__()
        frequency.check_frequency_data(frequency_data)
        if not isinstance(search_epochs, int) or search_epochs < 1:
            raise ValueError(
                "`search_epochs` must be a positive integer. "
                f"Received: search_epochs={search_epochs}"
            )
        if warmup_epochs is None:
            warmup_epochs = min(1, search_epochs - 1)
        if not isinstance(warmup_epochs, int) or not (
            0 <= warmup_epochs < search_epochs
        ):
            raise ValueError(
                "`warmup_epochs` must be an integer from 0 to search_epochs - "
                f"1 = {search_epochs - 1}. Received: "
                f"warmup_epochs={warmup_epochs}"
            )
        if selection not in SELECTION_RULES:
            raise ValueError(
                f"`selection` must be one of {SELECTION_RULES}. "
                f"Received: selection={selection!r}"
            )
        check_target_bits(target_bits, rule=selection, rule_name="selection")
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                "`mode` must be 'auto', 'min' or 'max'. "
                f"Received: mode={mode!r}"
            )
        self.frequency_data = frequency_data
        self.search_epochs = search_epochs
        self.warmup_epochs = warmup_epochs
        self.selection = selection
        self.seed = seed
        self.target_bits = target_bits
        self.monitor = monitor
        if mode == "auto":
            key = (monitor or "").lower()
            mode = "max" if ("auc" in key or "acc" in key) else "min"
        self.mode = mode
        self.rewind_embeddings = rewind_embeddings
        self.reset_optimizer = reset_optimizer
        self.verbose = verbose
        self.layers = []

    # ----------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs=None):
        self.layers = find_layers(self.model)
        if not self.layers:
            raise ValueError(
                f"MPECallback: model '{self.model.name}' has no "
                "MixedPrecisionEmbedding layer."
            )
        epochs = self.params.get("epochs")
        if epochs is not None and self.search_epochs >= epochs:
            raise ValueError(
                f"MPECallback: `search_epochs={self.search_epochs}` leaves no "
                f"retraining in `fit(epochs={epochs})`: the precisions are "
                "chosen at the start of epoch search_epochs. Give fit more "
                "epochs than search_epochs."
            )
        for layer in self.layers:  # before the counting pass, not after
            check_target_bits(
                self.target_bits, layer.bit_candidates, table=layer.name
            )
        if not all(layer.has_frequencies for layer in self.layers):
            self._count_frequencies()

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0:
            # A fit from epoch 0 starts a new search (a resumed one starts
            # later and keeps what its checkpoint restored).
            for layer in self.layers:
                layer.snapshot_embeddings()
                layer.forget_search_state()
                layer.set_phase(Phase.FLOAT)
        if epoch >= self.search_epochs:
            if any(layer.phase != Phase.FIXED for layer in self.layers):
                self._select()
        elif epoch >= self.warmup_epochs:
            for layer in self.layers:
                if layer.phase == Phase.FLOAT:
                    layer.initialize_step_sizes()
                    layer.set_phase(Phase.SEARCH)
        else:
            for layer in self.layers:
                layer.set_phase(Phase.FLOAT)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        bits = self.average_bits()
        logs["mpe_phase"] = int(self.layers[0].phase)
        logs["mpe_bits"] = bits
        logs["mpe_compression"] = 32.0 / bits if bits else float("inf")
        searching = self.warmup_epochs <= epoch < self.search_epochs
        if searching and self.monitor:
            self._remember_if_best(logs)

    # --------------------------------------------------------------- helpers
    def average_bits(self) -> float:
        """Average bits per element over all MPE tables (by table size)."""
        sizes = [layer.input_dim * layer.output_dim for layer in self.layers]
        bits = [layer.average_bits() for layer in self.layers]
        return float(np.dot(sizes, bits) / sum(sizes))

    def _count_frequencies(self):
        counts = frequency.count_ids(
            self.model, self.layers, self.frequency_data
        )
        if not any(c.any() for c in counts):
            raise ValueError(
                "MPECallback: `frequency_data` yielded no ids (is it empty?)."
            )
        for layer, layer_counts in zip(self.layers, counts, strict=True):
            layer.set_frequencies(layer_counts)
            if self.verbose:
                seen = int((layer_counts > 0).sum())
                print(
                    f"MPECallback: {layer.name}: counted "
                    f"{int(layer_counts.sum())} lookups of {seen} of "
                    f"{layer.input_dim} ids into {layer.num_groups} groups"
                )

    def _remember_if_best(self, logs):
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(
                f"MPECallback: `monitor={self.monitor!r}` is not in the logs; "
                f"available: {sorted(logs)}"
            )
        best = self.layers[0].kept_score
        better = best is None or (
            value > best if self.mode == "max" else value < best
        )
        if better:
            for layer in self.layers:
                layer.keep_search_state(value)

    def _select(self):
        for layer in self.layers:
            if layer.kept_score is not None:
                layer.restore_search_state()
            _warn_if_unmoved(layer)
            layer.fix_bits(
                layer.select_bits(self.selection, self.seed, self.target_bits)
            )
            if self.rewind_embeddings:
                layer.rewind()
            if self.verbose:
                bits = layer.average_bits()
                print(
                    f"MPECallback: {layer.name}: chosen bits per group "
                    f"(rarest first) {layer.bits_per_group().tolist()}"
                    f"; {bits:.3f} bits per element, "
                    f"{32 / bits if bits else float('inf'):.1f}x compression"
                )
        if self.reset_optimizer and self.model.optimizer is not None:
            _reset_optimizer(self.model.optimizer)


# Below this, the distributions are too close to uniform for the choice
# to reflect the search (see `selection.distance_from_uniform`).
UNMOVED = 0.05


def _warn_if_unmoved(layer):
    """Warns when a layer's search left its distributions near uniform."""
    moved = distance_from_uniform(layer.precision_probabilities())
    if moved < UNMOVED:
        warnings.warn(
            f"MPECallback: layer '{layer.name}': the precision "
            f"distributions are still close to uniform at selection "
            f"(distance from uniform {moved:.4f} on a 0-1 scale, below "
            f"{UNMOVED}): the search learned little, so the chosen bits "
            "(and any target_bits budget) hardly reflect it. Search for "
            "more steps (search_epochs, smaller batches), or lower the "
            f"layer's temperature (now {layer.temperature:g}) so that the "
            "logits move the distributions faster.",
            stacklevel=2,
        )


def _reset_optimizer(optimizer):
    """Zeros the optimizer's training state (moments, step counts), as a
    fresh optimizer has it, keeping its settings: learning rates and any
    loss scale (zeroed, mixed precision training turns to NaN)."""
    settings = _compat.optimizer_settings(optimizer)
    for variable in _compat.optimizer_variables(optimizer):
        if not any(variable is setting for setting in settings):
            variable.assign(tf.zeros(variable.shape, variable.dtype))
