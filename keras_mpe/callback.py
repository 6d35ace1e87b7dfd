"""MPECallback: the schedule of a mixed-precision search inside `model.fit`.

Epochs of one `fit` call, with W = `warmup_epochs`, S = `search_epochs`:

| epochs     | what happens                                                |
|------------|-------------------------------------------------------------|
| train start| count id frequencies over `frequency_data`, group the rows  |
| 0 (begin)  | a new search: remember the table for the rewind, forget any |
|            | kept epoch, enter FLOAT                                     |
| 0 .. W-1   | FLOAT warm-up: the table learns before precisions compete   |
| W .. S-1   | SEARCH: the rest of the model's weights copied, step sizes  |
|            | set from the table's scale, then the per-group bit          |
|            | distributions learn under the bit penalty                   |
| S          | select each group's bits (optionally from the best search   |
|            | epoch), rewind the table and the rest of the model, reset   |
|            | the optimizer, enter FIXED                                  |
| S .. end   | FIXED: retrain at the chosen precisions, no penalty         |

Every step is decided from the epoch index and the layers' own state, so a
`fit` resumed from a checkpoint with `initial_epoch` picks up where it was;
only the copy of the rest of the model (`rewind_network`) is held in
memory, not in the checkpoint.
"""

import numbers
import warnings

import numpy as np
import tensorflow as tf

from keras_mpe import _compat
from keras_mpe import frequency
from keras_mpe import summaries
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
            as given to `fit`. Streamed once at the start to count ids;
            under a multi-worker strategy a `tf.data.Dataset`, of which
            each worker counts a shard (`frequency.count_ids`).
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
        rewind_network: Boolean. Reset every other weight of the model
            (dense layers, BatchNormalization statistics, float
            embeddings: all but the MixedPrecisionEmbedding layers') to
            its value at the start of the search, after the warm-up,
            before retraining. The search epochs then shape the chosen
            precisions only, not the network that retrains: on a small
            data set that network overfits during them (on the real
            Criteo, Avazu and KDD12 samples a float model peaks in its
            first epoch). On 20 Criteo splits retraining from the
            search's start scored 0.008 AUC above retraining from its
            end (`benchmarks/RESULTS.md`). The copy is held in host
            memory, as large as those weights; a fit resumed from a
            checkpoint after the search started has no copy, warns and
            retrains the network as it is. False: the reference's way,
            the network goes on from the last search epoch.
        reset_optimizer: Boolean. Zero the optimizer state (all but the
            learning rate) before retraining, its step count included: a
            learning-rate schedule starts over.
        max_metric_drop: Non-negative number or None. A guard on the
            accuracy the bit penalty's size may cost: at selection, the
            monitored validation metric of the selection rule's bits
            (measured on `validation_data` before retraining) must be
            within this much of the largest budget's (every group at its
            largest candidate), measured first with the same weights:
            below it for "max" metrics, above it for "min" ones such as a
            loss. If it is not, the smallest larger size budget (bits per
            element, from `budget_levels`) that is. Sizes below the rule's
            are not tried: on the real samples they scored as well before
            retraining and lost 0.011 AUC after it. Comparing sizes on the
            same weights leaves out how the model changed between epochs.
            Needs `monitor="val_<metric>"` and `validation_data`; replaces
            `target_bits`. The sizes tried (the largest first, then the
            rule's), their metric and whether it held are kept in
            `budget_trials`. A smaller size that scores better than the
            largest by more than the drop gets a warning: the weights at
            selection have then overfit, or adapted to the search's mix of
            precisions, or the validation data cannot resolve the drop.
        validation_data: Dataset of `(x, y)` batches, as given to `fit`'s
            `validation_data`; used by `max_metric_drop` only.
        log_dir: String or None. A TensorBoard log folder (the one given to
            `keras.callbacks.TensorBoard`, if any): per epoch, under
            `<log_dir>/mpe`, the bits and compression, each layer's
            expected bits per group during the search and an image of the
            chosen bits per group (see `summaries.py`). Needs tensorboard.
        verbose: Integer. 1 shows a progress bar for the counting pass and
            prints its outcome and the selection's, as Keras prints (to
            absl logging after `keras.config.disable_interactive_logging()`
            or `tf.keras.utils.disable_interactive_logging()`); 0 is
            silent.
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
        max_metric_drop=None,
        validation_data=None,
        log_dir=None,
        rewind_embeddings: bool = True,
        rewind_network: bool = True,
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
        for name, value in (
            ("rewind_embeddings", rewind_embeddings),
            ("rewind_network", rewind_network),
            ("reset_optimizer", reset_optimizer),
        ):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(
                    f"`{name}` must be True or False. Received: "
                    f"{name}={value!r}"
                )
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                "`mode` must be 'auto', 'min' or 'max'. "
                f"Received: mode={mode!r}"
            )
        _check_metric_drop(max_metric_drop, monitor, validation_data)
        if max_metric_drop is not None and target_bits is not None:
            raise ValueError(
                "`max_metric_drop` and `target_bits` both set the size; give "
                f"one. Received: max_metric_drop={max_metric_drop}, "
                f"target_bits={target_bits}"
            )
        if max_metric_drop is not None and selection != "threshold":
            raise ValueError(
                "`max_metric_drop` chooses the bits with its own rule; leave "
                f"`selection` at 'threshold'. Received: selection={selection!r}"
            )
        if log_dir is not None:
            summaries.check_tensorboard()
        self.log_dir = log_dir
        self._summaries = None
        self.max_metric_drop = max_metric_drop
        self.validation_data = validation_data
        self.budget_trials = []
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
        self.rewind_network = rewind_network
        self._network_at_search_start = None
        self.reset_optimizer = reset_optimizer
        self.verbose = verbose
        self.layers = []
        self._first_epoch = None
        self._first_step = 0

    # ----------------------------------------------------------- Keras hooks
    def set_model(self, model):
        _compat.check_strategy(model.distribute_strategy, "MPECallback")
        super().set_model(model)

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
        self._first_epoch = None  # this fit's, set by on_epoch_begin

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            # Where this fit starts (a resumed one later than 0), to
            # count the steps an epoch takes.
            self._first_epoch = epoch
            self._first_step = _compat.optimizer_steps(self.model.optimizer)
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
            starting = [
                layer for layer in self.layers if layer.phase == Phase.FLOAT
            ]
            if starting:
                self._set_search_length(epoch, starting)
                if self.rewind_network:
                    self._network_at_search_start = [
                        (weight, _compat.read(weight).numpy())
                        for weight in self._network()
                    ]
            for layer in starting:
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
        if self.log_dir is not None:
            if self._summaries is None:
                self._summaries = summaries.SearchSummaries(self.log_dir)
            self._summaries.write(epoch, self.layers, bits)
        searching = self.warmup_epochs <= epoch < self.search_epochs
        if searching and self.monitor:
            self._remember_if_best(logs)

    # --------------------------------------------------------------- helpers
    def average_bits(self) -> float:
        """Average bits per element over all MPE tables (by table size)."""
        sizes = [layer.input_dim * layer.output_dim for layer in self.layers]
        bits = [layer.average_bits() for layer in self.layers]
        return float(np.dot(sizes, bits) / sum(sizes))

    def _steps_per_epoch(self, epoch):
        """Optimizer steps per epoch: `fit`'s, else those the epochs so
        far took, else the batches of `frequency_data`; None if unknown."""
        steps = self.params.get("steps")
        if not steps and epoch > self._first_epoch:
            done = _compat.optimizer_steps(self.model.optimizer)
            done -= self._first_step
            steps = done // (epoch - self._first_epoch)
        if not steps:
            steps = frequency.batch_count(self.frequency_data)
        return steps or None

    def _set_search_length(self, epoch, layers):
        """Gives the layers whose temperature is None the search's length
        (`MixedPrecisionEmbedding.set_search_length`)."""
        auto = [layer for layer in layers if layer.temperature is None]
        if not auto:
            return
        steps = self._steps_per_epoch(epoch)
        if steps is None:
            warnings.warn(
                "MPECallback: the number of steps per epoch is unknown (no "
                "`steps_per_epoch`, a dataset of unknown length, no warm-up "
                "epoch to count them), so the layers' temperature stays "
                f"{auto[0].current_temperature:g}. Give fit "
                "`steps_per_epoch`, or the layers a `temperature`.",
                stacklevel=2,
            )
            return
        search_steps = steps * (self.search_epochs - epoch)
        rate = _compat.current_learning_rate(self.model.optimizer)
        for layer in auto:
            layer.set_search_length(search_steps, rate)
            if self.verbose:
                _compat.print_msg(
                    f"MPECallback: {layer.name}: {search_steps} search steps "
                    f"at learning rate {rate:g}: temperature "
                    f"{layer.current_temperature:.3g}"
                )

    def _count_frequencies(self):
        counts = frequency.count_ids(
            self.model, self.layers, self.frequency_data, verbose=self.verbose
        )
        if not any(c.any() for c in counts):
            raise ValueError(
                "MPECallback: `frequency_data` yielded no ids (is it empty?)."
            )
        for layer, layer_counts in zip(self.layers, counts, strict=True):
            layer.set_frequencies(layer_counts)
            if self.verbose:
                seen = int((layer_counts > 0).sum())
                _compat.print_msg(
                    f"MPECallback: {layer.name}: counted "
                    f"{int(layer_counts.sum())} lookups of {seen} of "
                    f"{layer.input_dim} ids into {layer.num_groups} groups"
                )

    def _budget_within_metric_drop(self):
        """The size to retrain at: None (the selection rule's own choice,
        the bit penalty's size) when its validation metric stays within
        `max_metric_drop` of the largest budget's, both measured with the
        weights as they are at selection; else the smallest budget above
        the rule's that stays within (binary search over `budget_levels`:
        a larger budget is assumed no worse). Sizes below the rule's are
        not tried: on weights that have overfit, or adapted to the
        search's mix of precisions, they score as well as larger ones
        and then lose far more after retraining (benchmarks/RESULTS.md)."""
        key = self.monitor[len("val_") :]
        candidates = {b for layer in self.layers for b in layer.bit_candidates}
        levels = budget_levels(candidates)
        sign = 1.0 if self.mode == "max" else -1.0

        def measure(target_bits):
            for layer in self.layers:
                layer.fix_bits(
                    layer.select_bits(self.selection, self.seed, target_bits)
                )
            scores = self.model.evaluate(
                self.validation_data, verbose=0, return_dict=True
            )
            if key not in scores:
                raise ValueError(
                    f"MPECallback: `monitor={self.monitor!r}` needs "
                    f"'{key}' from model.evaluate; it gave {sorted(scores)}"
                )
            return float(scores[key])

        reference = measure(levels[-1])
        self.budget_trials.append((levels[-1], reference, True))

        def holds(target_bits):
            value = measure(target_bits)
            ok = sign * (value - reference) >= -self.max_metric_drop
            self.budget_trials.append((self.average_bits(), value, bool(ok)))
            return ok

        chosen = None
        if not holds(None):
            rule_bits = self.budget_trials[-1][0]
            # The largest level held by definition: the search ends there.
            above = [level for level in levels[:-1] if level > rule_bits]
            above.append(levels[-1])
            low, high = 0, len(above) - 1
            while low < high:
                middle = (low + high) // 2
                if holds(above[middle]):
                    high = middle
                else:
                    low = middle + 1
            chosen = above[low]
        self.model.reset_metrics()  # the epoch's training metrics start clean
        self._warn_if_smaller_scored_better(reference, sign)
        if self.verbose:
            outcome = (
                "the bit penalty's size"
                if chosen is None
                else f"{chosen:.3f} bits per element"
            )
            _compat.print_msg(
                f"MPECallback: {self.monitor} at the largest size "
                f"({levels[-1]:g} bits per element) {reference:.5f}; tried "
                f"(bits per element, {key}, within {self.max_metric_drop}): "
                f"{self.budget_trials}; chose {outcome}"
            )
        return chosen

    def _warn_if_smaller_scored_better(self, reference, sign):
        """Warns when a smaller size beat the largest by more than the
        drop: the weights at selection then favour fewer bits, or the
        validation data cannot resolve the drop; either way the measured
        drop says little about the cost after retraining."""
        largest = self.budget_trials[0][0]
        level, value, _ = max(
            self.budget_trials, key=lambda trial: sign * trial[1]
        )
        if sign * (value - reference) <= self.max_metric_drop:
            return
        warnings.warn(
            f"MPECallback: {self.monitor} was {value:.5f} at {level:.3g} "
            f"bits per element, better than {reference:.5f} at the largest "
            f"size ({largest:g} bits per element) by more than "
            f"max_metric_drop={self.max_metric_drop}. Either the weights "
            "at selection favour fewer bits (they have overfit the training "
            "data, or adapted to the search's mix of precisions, in which "
            "rare rows are mostly pruned), and the drop measured before "
            "retraining understates what the chosen size costs after it; "
            "or the validation data are too few to resolve a difference of "
            "max_metric_drop. Check the retrained model's metric against a "
            "float one, name the size with target_bits instead, or select "
            "earlier (fewer search_epochs) when the validation metric peaks "
            "in the first epochs.",
            stacklevel=3,
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
        target_bits = self.target_bits
        if self.max_metric_drop is not None:
            target_bits = self._budget_within_metric_drop()
        for layer in self.layers:
            layer.fix_bits(
                layer.select_bits(self.selection, self.seed, target_bits)
            )
            if self.rewind_embeddings:
                layer.rewind()
            if self.verbose:
                bits = layer.average_bits()
                _compat.print_msg(
                    f"MPECallback: {layer.name}: chosen bits per group "
                    f"(rarest first) {layer.bits_per_group().tolist()}"
                    f"; {bits:.3f} bits per element, "
                    f"{32 / bits if bits else float('inf'):.1f}x compression"
                )
        if self.rewind_network:
            self._rewind_network()
        if self.reset_optimizer and self.model.optimizer is not None:
            _reset_optimizer(self.model.optimizer)

    def _network(self):
        """The model's weights outside the MixedPrecisionEmbedding layers."""
        own = {id(weight) for layer in self.layers for weight in layer.weights}
        return [
            weight for weight in self.model.weights if id(weight) not in own
        ]

    def _rewind_network(self):
        """Resets the network to its weights at the start of the search."""
        if self._network_at_search_start is None:
            warnings.warn(
                "MPECallback: the network's weights at the start of the "
                "search were not kept: this fit resumed from a checkpoint "
                "after the search began, and the copy is held in memory "
                "only. Retraining goes on from the network as it is (as "
                "with rewind_network=False). For a resume that retrains as "
                "the uninterrupted fit would, resume from a checkpoint "
                "taken before the search, or pass rewind_network=False.",
                stacklevel=3,
            )
            return
        for weight, value in self._network_at_search_start:
            weight.assign(value)
        self._network_at_search_start = None


def _check_metric_drop(max_metric_drop, monitor, validation_data):
    """Raises a ValueError unless `max_metric_drop` can be honoured."""
    if max_metric_drop is None:
        return
    if (
        isinstance(max_metric_drop, bool)
        or not isinstance(max_metric_drop, numbers.Real)
        or not 0 <= max_metric_drop < float("inf")
    ):
        raise ValueError(
            "`max_metric_drop` must be a non-negative number (how much of "
            "the monitored validation metric the compression may cost). "
            f"Received: max_metric_drop={max_metric_drop!r}"
        )
    if not (monitor or "").startswith("val_"):
        raise ValueError(
            "`max_metric_drop` needs a validation metric to hold: "
            "monitor='val_<metric>' (e.g. 'val_auc', 'val_loss'). "
            f"Received: monitor={monitor!r}"
        )
    if validation_data is None:
        raise ValueError(
            "`max_metric_drop` needs `validation_data` (the data given to "
            "fit's validation_data), to measure candidate sizes on. "
            "Received: validation_data=None"
        )


def budget_levels(bit_candidates) -> list:
    """Size budgets (bits per element) to try, from the smallest.

    Steps of a factor sqrt(2) from the largest candidate down to 1/64
    bit, and the smallest candidate (0 when pruning is allowed).
    """
    largest, smallest = max(bit_candidates), min(bit_candidates)
    levels = {float(smallest)}
    step = 0
    while largest / 2 ** (step / 2) >= max(smallest, 1 / 64):
        levels.add(largest / 2 ** (step / 2))
        step += 1
    return sorted(levels)


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
            f"layer's temperature (now {layer.current_temperature:g}) so "
            "that the logits move the distributions faster.",
            stacklevel=2,
        )


def _reset_optimizer(optimizer):
    """Zeros the optimizer's training state (moments, step counts), as a
    fresh optimizer has it, keeping its settings: learning rates and any
    loss scale (zeroed, mixed precision training turns to NaN)."""
    settings = _compat.optimizer_settings(optimizer)
    for variable in _compat.optimizer_variables(optimizer):
        if any(variable is setting for setting in settings):
            continue
        # One assignment: zeroing a table's moments row by row (scatters,
        # or slices) left them copied on the next reads, a table's worth
        # more peak memory (`benchmarks/memory.py`); a zero tensor is
        # freed at once, below the training step's own peak.
        variable.assign(tf.zeros(variable.shape, variable.dtype))
