"""Plants known bugs in a copy of the repository; the tests must catch them.

Each patch below replaces one short piece of keras_mpe source with a
realistic bug and names the tests written to catch it. For each patch the
script copies the working tree (tracked files and new, not ignored ones)
into a temporary folder, applies the patch there, runs the named tests
with pytest under Keras 3 and/or tf_keras (`TF_USE_LEGACY_KERAS=1`) and
reports one of:

- killed: a named test failed in every Keras mode the patch ran in;
- survived: the named tests passed (in at least one mode) with the bug in
  place, so they miss it: write the test that fails;
- stale: the old text is not in the file exactly once (the source
  changed): update the patch's `old` and `new`.

Before the patches it runs every named test once without a patch (the
baseline): a test that already fails or is skipped there proves nothing.
The working tree is never modified.

Usage:

    python tools/mutants.py                 # every patch, both modes
    python tools/mutants.py --keras 3       # Keras 3 only
    python tools/mutants.py --only threshold-tie-dropped
    python tools/mutants.py --list

Exit status: 0 when no patch survived, 1 when one did, 2 when the
baseline fails.
"""

import argparse
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = {"3": "Keras 3", "2": "tf_keras"}
TIMEOUT_S = 900


@dataclasses.dataclass(frozen=True)
class Patch:
    """One planted bug.

    Attributes:
        name: Short id, for `--only`.
        file: Path of the patched file, from the repository root.
        old: Text found exactly once in `file` (keep it one short line so
            that unrelated edits leave it applicable).
        new: Its replacement: the bug.
        tests: pytest node ids, from the repository root, that must fail.
        why: What the bug does, one line.
        modes: The Keras modes ("3", "2") in which the bug has an effect.
    """

    name: str
    file: str
    old: str
    new: str
    tests: tuple
    why: str
    modes: tuple = ("3", "2")


CALLBACK = "tests/callback_test.py::ScheduleTest::"
EMBEDDING = "tests/embedding_test.py::PhaseOutputTest::"
EXPORT = "tests/export_test.py::ExportInferenceTest::"
FIXED_BIT = "tests/fixed_bit_test.py::FixedBitTest::"
FREQUENCY = "tests/frequency_test.py::"
PACKING = "tests/packing_test.py::PackingTest::"
QUANTIZER = "tests/quantizer_test.py::QuantizerTest::"
SELECTION = "tests/selection_test.py::SelectionTest::"
IDS = "tests/ids_test.py::"
IDS_EMBEDDING = "tests/embedding_test.py::BadInputTest::"

PATCHES = (
    # The schedule (callback.py) and serving (export.py).
    Patch(
        "optimizer-reset-zeroes-learning-rate",
        "keras_mpe/_compat.py",
        'getattr(optimizer, "_learning_rate", None),',
        "None,",
        (
            CALLBACK
            + "test_reset_keeps_the_learning_rate_and_retraining_learns",
        ),
        "retraining runs at learning rate 0 and changes nothing",
        # tf_keras keeps the learning rate out of `optimizer.variables`.
        modes=("3",),
    ),
    Patch(
        "serve-in-training-mode",
        "keras_mpe/export.py",
        "training=False)",
        "training=True)",
        (EXPORT + "test_batch_norm_and_dropout_serve_in_inference_mode",),
        "served BatchNormalization uses batch statistics, Dropout drops",
    ),
    Patch(
        "no-snapshot-at-train-start",
        "keras_mpe/callback.py",
        "layer.snapshot_embeddings()",
        "pass",
        (CALLBACK + "test_rewind_returns_to_the_table_at_the_start_of_fit",),
        "the rewind goes back to the table the layer was built with",
    ),
    Patch(
        "network-not-rewound",
        "keras_mpe/callback.py",
        "self._rewind_network()",
        "pass",
        (
            "tests/callback_test.py::NetworkRewindTest::test_retrains_from_the_search_start",
        ),
        "the network retrains from the last search epoch, not the first",
    ),
    Patch(
        "no-step-sizes-after-warmup",
        "keras_mpe/callback.py",
        "layer.initialize_step_sizes()",
        "pass",
        (CALLBACK + "test_step_sizes_are_set_from_the_warmed_up_table",),
        "the quantizer keeps the scale of the untrained table",
    ),
    Patch(
        "best-epoch-skips-first-search-epoch",
        "keras_mpe/callback.py",
        "searching = self.warmup_epochs <= epoch",
        "searching = self.warmup_epochs < epoch",
        (CALLBACK + "test_best_epoch_can_be_the_first_search_epoch",),
        "with `monitor`, the first search epoch is never the best",
    ),
    # Selection rules (selection.py).
    Patch(
        "threshold-tie-dropped",
        "keras_mpe/selection.py",
        "keep = probabilities >= 1.0",
        "keep = probabilities > 1.0",
        (
            SELECTION
            + "test_threshold_rule_keeps_a_candidate_at_exactly_the_threshold",
        ),
        "a probability of exactly 1/(2K) no longer keeps its bits",
    ),
    Patch(
        "threshold-one-over-k",
        "keras_mpe/selection.py",
        "1.0 / (2 * candidates.size)",
        "1.0 / candidates.size",
        (SELECTION + "test_threshold_rule",),
        "the threshold is 1/K instead of 1/(2K)",
    ),
    Patch(
        "budget-must-fit-strictly",
        "keras_mpe/selection.py",
        "if 0 < cost <= room + slack:",
        "if 0 < cost < room:",
        (SELECTION + "test_budget_bits_golden",),
        "a step that fills the budget exactly is skipped",
    ),
    Patch(
        "budget-without-running-maximum",
        "keras_mpe/selection.py",
        "np.where(groups >= group, wanted, bits)",
        "np.where(groups == group, wanted, bits)",
        (
            SELECTION + "test_budget_bits_golden",
            SELECTION + "test_budget_bits_fills_the_budget",
        ),
        "a rarer group may keep more bits than a more frequent one",
    ),
    Patch(
        "tail-level-strict",
        "keras_mpe/selection.py",
        "keep = _tails(probabilities) >= level",
        "keep = _tails(probabilities) > level",
        (SELECTION + "test_tail_bits_golden",),
        "a tail probability equal to the level no longer counts",
    ),
    # The quantizer and its gradients (quantizer.py).
    Patch(
        "clip-range-one-code-too-high",
        "keras_mpe/quantizer.py",
        "), 2 ** (bits - 1) - 1",
        "), 2 ** (bits - 1)",
        (
            QUANTIZER + "test_helpers",
            EMBEDDING + "test_fixed_phase_uses_the_chosen_bits",
        ),
        "b-bit codes get 2^b + 1 levels",
    ),
    Patch(
        "step-gradient-drops-rounding-term",
        "keras_mpe/quantizer.py",
        "upstream * (codes - inside * scaled)",
        "upstream * codes",
        (QUANTIZER + "test_gradients_golden",),
        "dQ/dalpha loses round(u) - u inside the range",
    ),
    Patch(
        "step-gradient-unscaled",
        "keras_mpe/quantizer.py",
        "d_step * grad_scale * tf.sign(step_size)",
        "d_step * tf.sign(step_size)",
        (QUANTIZER + "test_gradients_golden",),
        "the step size's gradient misses the LSQ scale",
    ),
    Patch(
        "straight-through-not-clipped",
        "keras_mpe/quantizer.py",
        "d_values = upstream * inside",
        "d_values = upstream",
        (QUANTIZER + "test_gradients_golden",),
        "values outside the range still get a gradient",
    ),
    Patch(
        "initial-step-size-wrong-root",
        "keras_mpe/quantizer.py",
        "2.0 * mean_abs / math.sqrt(2 ** (bits - 1))",
        "2.0 * mean_abs / math.sqrt(2**bits)",
        (
            QUANTIZER + "test_helpers",
            EMBEDDING + "test_step_sizes_follow_the_table_scale",
        ),
        "LSQ initial step sizes are sqrt(2) too small",
    ),
    Patch(
        "decode-subtracts-lo",
        "keras_mpe/quantizer.py",
        "tf.cast(codes + lo, tf.float32)",
        "tf.cast(codes - lo, tf.float32)",
        (FIXED_BIT + "test_bit_exact_and_compact_for_frequency_ordered_ids",),
        "served rows are decoded around the wrong zero",
    ),
    # The penalty weights (embedding.py) and counting (frequency.py).
    Patch(
        "penalty-weight-inverted",
        "keras_mpe/embedding.py",
        "expected / _compat.read(self._group_weights)",
        "expected * _compat.read(self._group_weights)",
        (EMBEDDING + "test_search_phase_mixture_and_penalty",),
        "frequent groups pay more per bit than rare ones",
    ),
    Patch(
        "counts-overwritten",
        "keras_mpe/frequency.py",
        "total[unique.numpy()] += count.numpy()",
        "total[unique.numpy()] = count.numpy()",
        (
            FREQUENCY
            + "CountingTest::test_counts_through_lookup_and_shared_layer",
        ),
        "each batch's counts replace the earlier batches'",
    ),
    Patch(
        "ties-lower-id-first",
        "keras_mpe/frequency.py",
        "np.lexsort((-np.arange(rows), counts))",
        "np.lexsort((np.arange(rows), counts))",
        (
            FREQUENCY
            + "GroupingTest::test_frequency_ordered_ids_give_contiguous_groups",
        ),
        "equal counts no longer give contiguous id ranges",
    ),
    Patch(
        "group-size-rounded-down",
        "keras_mpe/frequency.py",
        "chunk = -(-rows // num_groups)",
        "chunk = rows // num_groups",
        (FREQUENCY + "GroupingTest::test_golden_groups_and_weights",),
        "the rows overflow into a group past the last",
    ),
    Patch(
        "group-weights-inverted",
        "keras_mpe/frequency.py",
        "np.where(group_counts > 0, group_counts, floor) / floor",
        "floor / np.where(group_counts > 0, group_counts, floor)",
        (FREQUENCY + "GroupingTest::test_golden_groups_and_weights",),
        "c_g = min C / C_g instead of C_g / min C",
    ),
    # Bit packing (packing.py), serving lookups (fixed_bit.py, row_index.py).
    Patch(
        "unpack-mask-one-bit-wide",
        "keras_mpe/packing.py",
        "tf.constant((1 << bits) - 1, word)",
        "tf.constant((1 << (bits + 1)) - 1, word)",
        (
            PACKING + "test_unpack_golden",
            PACKING + "test_round_trip_every_bit_width",
        ),
        "each code keeps a bit of the next one",
    ),
    Patch(
        "row-bytes-rounded-down",
        "keras_mpe/packing.py",
        "return -(-bits * dim // 8)",
        "return bits * dim // 8",
        (PACKING + "test_golden_bytes",),
        "a row's last partial byte is not stored",
    ),
    Patch(
        "serving-step-off-by-one",
        "keras_mpe/fixed_bit.py",
        "_compat.read(self._step_sizes)[bits - 1]",
        "_compat.read(self._step_sizes)[bits % 8]",
        (FIXED_BIT + "test_bit_exact_and_compact_for_frequency_ordered_ids",),
        "served rows use the step size of the next bit-width",
    ),
    Patch(
        "static-lookup-keeps-wrong-rows",
        "keras_mpe/fixed_bit.py",
        "tf.where(member[:, None], rows, values)",
        "tf.where(member[:, None], values, rows)",
        (FIXED_BIT + "test_static_shapes_under_xla",),
        "the XLA lookup keeps every class's row but the id's own",
    ),
    Patch(
        "segment-search-left",
        "keras_mpe/row_index.py",
        'side="right"',
        'side="left"',
        (FIXED_BIT + "test_bit_exact_and_compact_for_frequency_ordered_ids",),
        "the first id of each segment is read from the segment before",
    ),
    Patch(
        "rank-counts-own-word",
        "keras_mpe/row_index.py",
        "local[None, :] < own_word,",
        "local[None, :] <= own_word,",
        (FIXED_BIT + "test_both_indexes_exact_for_any_id_order",),
        "the rank index counts rows after the id in its own word",
    ),
    # The ids a layer takes (ids.py).
    Patch(
        "ids-cast-before-the-check",
        "keras_mpe/ids.py",
        "unsigned = tf.uint64 if ids.dtype.size == 8 else tf.uint32",
        "unsigned = tf.uint32",
        (IDS_EMBEDDING + "test_ids_out_of_range_eager",),
        "an int64 id 2^32 + 5 wraps to row 5 instead of failing",
    ),
    Patch(
        "padding-pooled-by-mean",
        "keras_mpe/ids.py",
        "weights = tf.cast(tf.not_equal(ids, 0), rows.dtype)",
        "weights = tf.ones_like(ids, rows.dtype)",
        (IDS + "CombinerTest::test_golden_pools",),
        "mean and sqrtn divide by the padding too",
    ),
    Patch(
        "sqrtn-not-rooted",
        "keras_mpe/ids.py",
        "counts = tf.sqrt(counts)",
        "counts = counts",
        (IDS + "CombinerTest::test_golden_pools",),
        "sqrtn pools like mean",
    ),
    Patch(
        "padding-counted",
        "keras_mpe/ids.py",
        "ids = tf.boolean_mask(ids, tf.not_equal(ids, 0))",
        "ids = ids",
        (IDS + "PaddingCountTest::test_padding_is_not_counted",),
        "padding counts as the most frequent id and takes the most bits",
    ),
    # The speed-first layout and the remade initial table.
    Patch(
        "bytes-pruned-rows-get-the-offset",
        "keras_mpe/fixed_bit.py",
        "steps = tf.where(stored, steps, -offset)",
        "steps = tf.where(stored, steps, 0.0 * offset)",
        (FIXED_BIT + "test_bytes_layout_with_every_row_pruned",),
        'pruned ids read beta instead of 0 in the "bytes" layout',
    ),
    Patch(
        "one-seed-for-every-chunk",
        "keras_mpe/initial_table.py",
        'config["seed"] = (seed + chunk) % MAX_SEED',
        'config["seed"] = seed % MAX_SEED',
        (
            "tests/embedding_test.py::RewindTest::"
            "test_initial_values_are_remade_from_the_seed",
        ),
        "every 65,536-row chunk of the initial table repeats the first",
    ),
    Patch(
        "workers-count-everything",
        "keras_mpe/frequency.py",
        "dataset = strategy.experimental_distribute_dataset(dataset)",
        "pass",
        (
            "tests/distribute_test.py::"
            "test_multi_worker_counts_are_summed_over_the_workers_shards",
        ),
        "each worker counts all of frequency_data: the summed counts double",
    ),
    Patch(
        "parameter-servers-count-one-shard",
        "keras_mpe/frequency.py",
        "for w in range(workers)",
        "for w in range(1)",
        (
            "tests/distribute_test.py::"
            "test_sharded_table_trains_counts_converts_and_exports",
        ),
        "only the first worker's shard of frequency_data is counted",
        modes=("2",),
    ),
    Patch(
        "temperature-ignores-the-search-length",
        "keras_mpe/embedding.py",
        "self._temperature.assign(learning_rate * steps / LOGIT_TRAVEL)",
        "self._temperature.assign(AUTO_TEMPERATURE_START)",
        (
            "tests/callback_test.py::TemperatureTest::"
            "test_set_from_the_steps_and_the_learning_rate",
            "tests/callback_test.py::LearningTest::"
            "test_search_moves_at_any_length",
        ),
        "the temperature stays 0.1 whatever the search's length",
    ),
    Patch(
        "metric-drop-against-the-smallest-size",
        "keras_mpe/callback.py",
        "reference = measure(levels[-1])",
        "reference = measure(levels[0])",
        (
            "tests/callback_test.py::MetricDropTest::"
            "test_measured_against_the_largest_size",
            "tests/callback_test.py::MetricDropTest::"
            "test_the_penalty_size_when_it_holds",
        ),
        "max_metric_drop compares sizes with the smallest one",
    ),
    Patch(
        "metric-drop-tries-sizes-below-the-penalty-size",
        "keras_mpe/callback.py",
        "above = [level for level in levels[:-1] if level > rule_bits]",
        "above = list(levels[:-1])",
        (
            "tests/callback_test.py::MetricDropTest::"
            "test_a_larger_size_when_the_penalty_size_fails",
        ),
        "max_metric_drop searches below the bit penalty's size",
    ),
    Patch(
        "metric-drop-ignores-the-penalty-size",
        "keras_mpe/callback.py",
        "if not holds(None):",
        "if holds(None) or True:",
        (
            "tests/callback_test.py::MetricDropTest::"
            "test_the_penalty_size_when_it_holds",
            "tests/callback_test.py::MetricDropTest::"
            "test_measured_against_the_largest_size",
        ),
        "max_metric_drop searches sizes even when the penalty's holds",
    ),
    Patch(
        "metric-drop-never-says-a-smaller-size-scored-better",
        "keras_mpe/callback.py",
        "if sign * (value - reference) <= self.max_metric_drop:",
        "if True:",
        (
            "tests/callback_test.py::MetricDropTest::"
            "test_the_penalty_size_when_it_holds",
        ),
        "max_metric_drop is silent when a smaller size beat the largest",
    ),
    Patch(
        "benchmark-dense-layers-start-as-keras",
        "benchmarks/quality/training.py",
        'if args.dense_init == "glorot":',
        "if True:",
        (
            "tests/quality_benchmark_test.py::"
            "test_dense_layers_start_as_the_reference_or_as_keras",
        ),
        "the quality benchmark's Dense layers start as Keras', not as "
        "the reference's",
    ),
)


def copy_tree(destination):
    """Copies the working tree (tracked and new, not ignored files)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:  # not a git checkout
        shutil.copytree(
            ROOT,
            destination,
            ignore=shutil.ignore_patterns(
                ".git", "__pycache__", "*.egg-info", ".*_cache"
            ),
        )
    else:
        for name in listed.stdout.decode().split("\0"):
            source = ROOT / name
            if name and source.is_file():  # not a deleted file
                target = destination / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    # Tests find data in ../shared beside the repository.
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        os.symlink(shared, destination.parent / "shared")


def apply(patch, tree):
    """Applies `patch` in `tree`; None, or why it no longer applies."""
    path = tree / patch.file
    if not path.is_file():
        return f"{patch.file} is gone"
    text = path.read_text()
    found = text.count(patch.old)
    if found != 1:
        return f"old text found {found} times in {patch.file}"
    path.write_text(text.replace(patch.old, patch.new))
    return None


def run_tests(tree, tests, mode):
    """pytest's (exit code, output) for `tests` in the copy `tree`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("TF_USE_LEGACY_KERAS", None)
    if mode == "2":
        env["TF_USE_LEGACY_KERAS"] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(
            [*command, "-x", "-q", *tests],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT_S} s"
    return done.returncode, done.stdout + done.stderr


def imported_from(tree):
    """Where Python run in the copy finds keras_mpe (without importing)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    code = "import importlib.util as u; print(u.find_spec('keras_mpe').origin)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return pathlib.Path(done.stdout.strip())


def baseline(patches, modes):
    """Runs every named test unpatched; True when all pass, none skipped."""
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        tree = pathlib.Path(folder) / "repo"
        copy_tree(tree)
        origin = imported_from(tree)
        if tree not in origin.parents:
            print(f"baseline: keras_mpe is imported from {origin}")
            return False
        for mode in modes:
            tests = sorted(
                {test for p in patches if mode in p.modes for test in p.tests}
            )
            if not tests:
                continue
            code, output = run_tests(tree, tests, mode)
            summary = output.strip().splitlines()[-1] if output.strip() else ""
            print(f"baseline, {MODES[mode]}: {summary}")
            if code != 0 or "skipped" in summary:
                print(output[-3000:])
                ok = False
    return ok


def run_patch(patch, modes):
    """{mode: "killed" / "survived"}, or the reason the patch is stale."""
    with tempfile.TemporaryDirectory() as folder:
        tree = pathlib.Path(folder) / "repo"
        copy_tree(tree)
        stale = apply(patch, tree)
        if stale:
            return stale
        outcome = {}
        for mode in modes:
            if mode in patch.modes:
                code, _ = run_tests(tree, patch.tests, mode)
                outcome[mode] = "survived" if code == 0 else "killed"
        return outcome


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--keras",
        choices=("3", "2", "both"),
        default="both",
        help="Keras 3, tf_keras (TF_USE_LEGACY_KERAS=1) or both",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this patch (repeat for several)",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the patches and exit"
    )
    args = parser.parse_args(argv)
    patches = PATCHES
    if args.only:
        unknown = set(args.only) - {p.name for p in PATCHES}
        if unknown:
            parser.error(f"no patch named {', '.join(sorted(unknown))}")
        patches = [p for p in PATCHES if p.name in args.only]
    if args.list:
        for p in patches:
            modes = ", ".join(MODES[m] for m in p.modes)
            print(f"{p.name}\n  {p.file}: {p.why} ({modes})")
            print(f"  {p.old!r} -> {p.new!r}")
            for test in p.tests:
                print(f"  caught by {test}")
        return 0
    modes = ("3", "2") if args.keras == "both" else (args.keras,)
    if not baseline(patches, modes):
        print("The named tests fail or skip without a patch: fix that first.")
        return 2
    width = max(len(p.name) for p in patches)
    header = " | ".join(f"{MODES[m]:<8}" for m in modes)
    print(f"\n{'patch':<{width}} | {header} | result")
    counts = {"killed": 0, "survived": 0, "stale": 0}
    for patch in patches:
        outcome = run_patch(patch, modes)
        if isinstance(outcome, str):
            result = "patch no longer applies: " + outcome
            counts["stale"] += 1
            cells = ["-" for _ in modes]
        elif not outcome:
            result = "not run: no effect in this Keras mode"
            cells = ["n/a" for _ in modes]
        else:
            killed = all(r == "killed" for r in outcome.values())
            result = "killed" if killed else "SURVIVED"
            counts["killed" if killed else "survived"] += 1
            cells = [outcome.get(m, "n/a") for m in modes]
        row = " | ".join(f"{cell:<8}" for cell in cells)
        print(f"{patch.name:<{width}} | {row} | {result}", flush=True)
    print(
        f"{counts['killed']} killed, {counts['survived']} survived, "
        f"{counts['stale']} stale"
    )
    return 1 if counts["survived"] else 0


if __name__ == "__main__":
    sys.exit(main())
