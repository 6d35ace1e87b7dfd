"""Tests for the synthetic generator and the real-data readers."""

import numpy as np
import pytest
import testing_utils

from keras_mpe import datasets


def _rows(dataset):
    features, labels = zip(*dataset.as_numpy_iterator(), strict=True)
    ids = np.concatenate([f["categorical"] for f in features])
    numeric = np.concatenate([f["numeric"] for f in features])
    return ids, numeric, np.concatenate(labels)


def test_criteo_like_rows_depend_on_seed_and_index_only():
    ids, numeric, labels = _rows(
        datasets.criteo_like(600, batch_size=200, max_cardinality=50, seed=3)
    )
    assert ids.shape == (600, 26) and numeric.shape == (600, 13)
    assert labels.shape == (600, 1)
    again = _rows(
        datasets.criteo_like(
            200, batch_size=200, first_row=400, max_cardinality=50, seed=3
        )
    )
    np.testing.assert_array_equal(again[0], ids[400:])
    np.testing.assert_array_equal(again[2], labels[400:])
    other_seed = _rows(
        datasets.criteo_like(600, batch_size=200, max_cardinality=50, seed=4)
    )
    assert (other_seed[0] != ids).mean() > 0.3


def test_criteo_like_ids_are_frequency_ordered_within_fields():
    cardinalities = datasets.field_cardinalities(1000)
    offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]])
    ids, _, labels = _rows(
        datasets.criteo_like(20_000, batch_size=5000, max_cardinality=1000)
    )
    ranks = ids - offsets
    assert (ranks >= 0).all() and (ranks < np.array(cardinalities)).all()
    # Field 0 has 1000 values: rank 0 is drawn far more than rank 100.
    counts = np.bincount(ranks[:, 0], minlength=1000)
    assert counts[0] > 5 * counts[100]
    assert counts[:10].sum() > counts[500:].sum()
    assert 0.1 < labels.mean() < 0.5


def test_criteo_like_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_cardinality"):
        datasets.criteo_like(10, max_cardinality=1)
    with pytest.raises(ValueError, match="zipf_exponent=1.0"):
        datasets.criteo_like(10, zipf_exponent=1.0)
    with pytest.raises(ValueError, match="num_rows=0"):
        datasets.criteo_like(0)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_criteo_buckets_numbers_and_keeps_fields_apart(tmp_path):
    # 10 rows, labelled by their index so the split can be undone; I1 is
    # 1, 5 or 100; C1 is "a" x6, "b" x3, "c" x1; other fields are empty.
    i1 = ["1"] * 4 + ["5"] * 3 + ["100"] * 3
    c1 = ["a"] * 6 + ["b"] * 3 + ["c"]
    lines = [
        "\t".join([str(r), i1[r]] + [""] * 12 + [c1[r]] + [""] * 25)
        for r in range(10)
    ]
    data = datasets.read_criteo(
        _write(tmp_path / "c.tsv", lines), min_count=1, train_fraction=0.5
    )
    assert data["train"][0].shape == (5, 39)
    assert data["val"][0].shape == (2, 39) and data["test"][0].shape == (3, 39)
    ids = np.zeros((10, 39), np.int32)
    for part in ("train", "val", "test"):
        part_ids, labels = data[part]
        ids[labels[:, 0].astype(int)] = part_ids
    for field, values in ((0, i1), (13, c1)):
        for value in set(values):
            same = ids[[v == value for v in values], field]
            assert len(set(same.tolist())) == 1, (field, value)
    # Fields never share an id: 37 empty fields give 37 "" ids; each
    # field also has an OOV id.
    fields_of_id = {}
    for field in range(39):
        for i in ids[:, field]:
            fields_of_id.setdefault(int(i), set()).add(field)
    assert all(len(f) == 1 for f in fields_of_id.values())
    assert len(set(data["oov_ids"].tolist())) == 39
    assert datasets._criteo_numeric_token("100") == "21"  # ln(100)^2=21.2
    assert datasets._criteo_numeric_token("5") == "2"  # ln(5)^2 = 2.59
    assert datasets._criteo_numeric_token("2") == "2"
    assert datasets._criteo_numeric_token("") == ""


def test_encode_fields_ranks_tokens_by_training_count():
    # Field 0: x x5, y x3, z x1, w x1 (z, w rare); field 1: "k" x10.
    tokens = [[t, "k"] for t in ["x"] * 5 + ["y"] * 3 + ["z", "w"]]
    labels = np.arange(10, dtype=np.float32)[:, None]
    data = datasets._encode_fields(tokens, labels, 2, 0.99, seed=0)
    ids, rows = data["train"]
    # Nine training rows; counts: k 9, x 5, y 3, field 0's OOV 1 (z or
    # w), field 1's OOV 0 -> ids 0..4 in that order.
    by_row = {int(r[0]): i.tolist() for r, i in zip(rows, ids, strict=True)}
    assert by_row[0] == [1, 0] and by_row[5] == [2, 0]
    assert data["oov_ids"].tolist() == [3, 4]
    assert by_row[8] == [3, 0] or by_row[9] == [3, 0]
    assert data["vocabulary_size"] == 5
    per_field = datasets._encode_fields(tokens, labels, 2, 0.99, 0, False)
    assert per_field["vocabulary_sizes"] == [3, 2]
    assert per_field["oov_ids"].tolist() == [2, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_fraction": 1.0}, "train_fraction=1.0"),
        ({"min_count": 0}, "min_count=0"),
    ],
)
def test_encode_fields_rejects_bad_arguments(kwargs, message):
    arguments = {"min_count": 2, "train_fraction": 0.8, "seed": 0}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        datasets._encode_fields([["a"]], np.zeros((1, 1)), **arguments)


def test_readers_reject_files_of_the_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="40 fields per line"):
        datasets.read_criteo(_write(tmp_path / "c.tsv", ["1\t2\t3"]))
    with pytest.raises(ValueError, match="24 fields per line"):
        datasets.read_avazu(_write(tmp_path / "a.csv", ["id,click", "1,0"]))
    with pytest.raises(ValueError, match="is empty"):
        datasets.read_kdd12(_write(tmp_path / "k.csv", []))


@pytest.mark.parametrize(
    "reader, parts, fields, rows",
    [
        (datasets.read_criteo, ("criteo", "criteo_dac_head8000.txt"), 39, 8000),
        (datasets.read_avazu, ("avazu", "avazu_train_head8999.csv"), 22, 8999),
        (
            datasets.read_kdd12,
            ("kdd12", "kdd12_click_prediction_small.csv"),
            11,
            39948,
        ),
    ],
)
def test_readers_on_the_shared_samples(reader, parts, fields, rows):
    data = reader(testing_utils.shared_file(*parts))
    train_ids, train_labels = data["train"]
    assert train_ids.shape == (int(rows * 0.8), fields)
    total = sum(data[p][0].shape[0] for p in ("train", "val", "test"))
    assert total == rows
    assert set(np.unique(train_labels)) == {0.0, 1.0}
    # Frequency ordered over the shared table: training lookups per id
    # never rise with the id.
    counts = np.bincount(train_ids.ravel(), minlength=data["vocabulary_size"])
    assert (np.diff(counts) <= 0).all()
    assert train_ids.max() < data["vocabulary_size"]


def test_read_movielens_on_the_shared_sample():
    directory = testing_utils.shared_file("movielens", "ml-100k")
    data = datasets.read_movielens(directory)
    features, ratings = data["train"]
    assert ratings.shape == (80_000, 1)
    assert set(np.unique(ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    sizes = data["vocabulary_sizes"]
    assert sizes["user_id"] == 944  # 943 users + OOV
    for name, size in sizes.items():
        assert 0 <= features[name].min() and features[name].max() < size
        counts = np.bincount(features[name], minlength=size)
        assert (np.diff(counts) <= 0).all()  # frequency ordered per field
