"""Quality, size and speed of MPE against fp32, uniform and post-training.

On one data set, one split per seed and one backbone, for each seed:

| method        | what it is                                                  |
|---------------|-------------------------------------------------------------|
| fp32          | float embedding trained from scratch                        |
| fp16, int8,   | post-training storage of the fp32 table: fp16, per-row int8 |
| int4          | and int4 (Keras 3's `Embedding.quantize` in Keras 3 mode;   |
|               | the same per-row formulas in numpy under tf_keras)          |
| qat8 .. qat2  | uniform-bit quantization-aware training (LSQ+): the MPE     |
|               | layer with one candidate, from the first step               |
| heuristic     | mixed precision without search: bits rise with log group    |
|               | frequency, to the budget MPE chose at `--budget-penalty`,   |
|               | from the first step                                         |
| control6      | the MPE pipeline (search, rewind, retrain) with one 6-bit   |
|               | candidate: what the two stages do without mixed precision  |
| mpe@lambda    | MPE at each bit penalty in `--penalties` (with              |
|               | `--target-bits B`: mpe@lambda/Bb, bits chosen to B per      |
|               | element)                                                    |

Every model keeps the weights of its best validation epoch (for MPE,
of the retraining epochs). Printed and written to `--out`: test AUC and
LogLoss (RMSE for MovieLens) as mean +- std over seeds, the paired
difference to fp32 (mean +- standard error over seeds of method - fp32 on
the same split: the splits differ by seed and move AUC by about 0.01,
more than most differences between methods), payload and real
compression of the table (real bytes of the converted layer, as exported),
median train seconds per epoch and predict time, both relative to fp32,
plus `results.json`, `results.md` and PNG plots.

From the repository root:

    python -m benchmarks.quality --data criteo --seeds 3
    python -m benchmarks.quality --data synthetic --rows 2000000 \
        --max-cardinality 200000 --seeds 1

`--data criteo|avazu|kdd12|movielens` read the samples in ../shared/data
(or `--path`); the run stops with a message when they are absent.
`--no-batchnorm` drops the MLP's BatchNorm layers and `--mlp ''` its
hidden layers (a logistic regression on the embeddings), for every method.
The Dense layers start as the reference's (PyTorch's `nn.Linear`;
`--dense-init glorot` for Keras'). `--defaults` compares fp32 with MPE as
a user gets it (`mpe@defaults`: the layer's and callback's defaults with
`max_metric_drop` 0.002 on the validation metric):

    python -m benchmarks.quality --data criteo --seeds 5 --defaults

| module        | holds                                                       |
|---------------|-------------------------------------------------------------|
| `readers.py`  | the data sets as batched train / val / test splits          |
| `training.py` | the backbone model, `fit` (best validation epoch, times)    |
| `measure.py`  | test metrics (AUC by rank sums), predict time, result rows  |
| `methods.py`  | one function per method of the table above                  |
| `runs.py`     | every method on one split, every seed, `results.json`       |
| `summary.py`  | mean, std and paired difference over seeds; the table       |
| `plots.py`    | metric vs compression, bits per group                       |
| `cli.py`      | the flags and `main`                                        |
"""
