"""Purged K-fold: no leakage, embargo honoured, every sample tested once; fold dirs not reused."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from naive import purged_train_loop

from lorentzcore.validation import (
    Fold,
    FoldArtifactDir,
    FoldReuseError,
    fingerprint_indices,
    no_information_overlap,
    purged_kfold_splits,
)

split_cases = st.tuples(
    arrays(np.int64, st.integers(12, 200), elements=st.integers(0, 400)),  # unsorted, repeats
    st.integers(2, 5),
    st.integers(0, 6),
    st.integers(0, 6),
)


def splits_or_reject(times, n_splits, embargo, horizon):
    try:
        return purged_kfold_splits(times, n_splits, embargo, horizon)
    except ValueError as exc:  # too few bars, or a fold left without training data
        assert "distinct bars" in str(exc) or "no training samples" in str(exc)
        return None


@settings(max_examples=200, deadline=None)
@given(case=split_cases)
def test_every_sample_is_tested_exactly_once_in_contiguous_time_blocks(case):
    times, n_splits, embargo, horizon = case
    folds = splits_or_reject(times, n_splits, embargo, horizon)
    if folds is None:
        return
    tested = np.concatenate([f.test_idx for f in folds])
    np.testing.assert_array_equal(np.sort(tested), np.arange(times.size))
    for earlier, later in itertools.pairwise(folds):
        assert times[earlier.test_idx].max() < times[later.test_idx].min()


@settings(max_examples=200, deadline=None)
@given(case=split_cases)
def test_training_sets_equal_the_sample_by_sample_purge_and_have_no_overlap(case):
    times, n_splits, embargo, horizon = case
    folds = splits_or_reject(times, n_splits, embargo, horizon)
    if folds is None:
        return
    for fold in folds:
        expected = purged_train_loop(times.tolist(), fold.test_idx.tolist(), horizon, embargo)
        assert fold.train_idx.tolist() == expected
    assert no_information_overlap(folds, times, horizon, embargo=embargo)


def test_embargo_and_purge_remove_exactly_the_bars_around_the_test_block():
    times = np.arange(100)
    fold = purged_kfold_splits(times, n_splits=5, embargo=3, horizon=2)[1]
    assert fold.test_idx.tolist() == list(range(20, 40))
    train = set(fold.train_idx.tolist())
    assert 17 in train and {18, 19} & train == set()  # labels of 18, 19 reach bar 20
    assert set(range(40, 45)) & train == set()  # test labels reach 41, embargo to 44
    assert 45 in train


def test_without_horizon_only_the_embargo_follows_the_test_block():
    fold = purged_kfold_splits(np.arange(50), n_splits=5, embargo=4, horizon=0)[2]
    assert fold.test_idx.tolist() == list(range(20, 30))
    assert fold.train_idx.tolist() == list(range(20)) + list(range(34, 50))


def test_unsorted_times_with_several_samples_per_bar_keep_each_bar_in_one_fold():
    rng = np.random.default_rng(0)
    times = rng.permutation(np.repeat(np.arange(30), 3))
    folds = purged_kfold_splits(times, n_splits=3, embargo=1, horizon=1)
    for fold in folds:
        test_bars = set(times[fold.test_idx].tolist())
        assert np.isin(times, list(test_bars)).sum() == fold.test_idx.size
    assert no_information_overlap(folds, times, horizon=1, embargo=1)


def tamper(fold: Fold, extra: int) -> Fold:
    return replace(fold, train_idx=np.sort(np.r_[fold.train_idx, extra]))


@pytest.mark.parametrize(
    ("extra", "why"),
    [(25, "a test sample"), (19, "a label window reaching the test block"), (44, "embargoed")],
)
def test_overlap_check_flags_any_leaking_training_sample(extra, why):
    times = np.arange(100)
    folds = purged_kfold_splits(times, n_splits=5, embargo=3, horizon=2)
    assert no_information_overlap(folds, times, horizon=2, embargo=3)
    folds[1] = tamper(folds[1], extra)
    assert not no_information_overlap(folds, times, horizon=2, embargo=3), why


def test_overlap_check_needs_the_embargo_to_see_embargo_violations():
    times = np.arange(100)
    folds = purged_kfold_splits(times, n_splits=5, embargo=0, horizon=0)
    assert no_information_overlap(folds, times, horizon=0)
    assert not no_information_overlap(folds, times, horizon=0, embargo=2)


@pytest.mark.parametrize(
    ("times", "n_splits", "embargo", "horizon", "error"),
    [
        (np.arange(10), 1, 0, 0, ValueError),
        (np.arange(10), 2, -1, 0, ValueError),
        (np.arange(10), 2, 0, 1.5, ValueError),
        (np.arange(10.0), 2, 0, 0, TypeError),
        (np.zeros(10, dtype=int), 2, 0, 0, ValueError),  # one bar cannot make two folds
        (np.arange(10), 2, 20, 0, ValueError),  # the embargo swallows the training set
        (np.array([], dtype=int), 2, 0, 0, ValueError),
    ],
)
def test_invalid_split_requests_are_refused(times, n_splits, embargo, horizon, error):
    with pytest.raises(error):
        purged_kfold_splits(times, n_splits, embargo, horizon)


def test_fold_indices_are_read_only():
    fold = purged_kfold_splits(np.arange(20), 2, 0)[0]
    with pytest.raises(ValueError):
        fold.train_idx[0] = 3


# --- fold artifact directories -------------------------------------------------------------


def test_fingerprint_ignores_order_and_dtype_but_not_membership():
    base = fingerprint_indices(np.array([3, 1, 2], dtype=np.int32))
    assert base == fingerprint_indices([1, 2, 3])
    assert base != fingerprint_indices([1, 2, 4])
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64


def test_fold_dir_is_created_with_a_json_manifest_and_reopens_for_the_same_fold(tmp_path):
    fold = purged_kfold_splits(np.arange(40), 4, 1)[2]
    artifacts = FoldArtifactDir.for_fold(tmp_path, fold)
    assert artifacts.path == tmp_path / "2"
    record = json.loads((artifacts.path / "fold.json").read_text())
    assert record["fold_id"] == "2"
    assert record["train_fingerprint"] == fingerprint_indices(fold.train_idx)
    artifacts.file("whitening.npz").write_bytes(b"x")
    again = FoldArtifactDir(tmp_path, 2, fingerprint_indices(fold.train_idx))
    assert again.file("whitening.npz").read_bytes() == b"x"
    assert sorted(p.name for p in artifacts.path.iterdir()) == ["fold.json", "whitening.npz"]


def test_fold_dir_refuses_another_training_set(tmp_path):
    folds = purged_kfold_splits(np.arange(40), 4, 1)
    FoldArtifactDir.for_fold(tmp_path, folds[0])
    with pytest.raises(FoldReuseError, match="belongs to fold"):
        FoldArtifactDir(tmp_path, 0, fingerprint_indices(folds[1].train_idx))


def test_fold_dir_copied_under_another_fold_id_is_refused(tmp_path):
    fold = purged_kfold_splits(np.arange(40), 4, 1)[0]
    source = FoldArtifactDir.for_fold(tmp_path, fold)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "fold.json").write_text((source.path / "fold.json").read_text())
    with pytest.raises(FoldReuseError, match="belongs to fold '0'"):
        FoldArtifactDir(tmp_path, 1, fingerprint_indices(fold.train_idx))


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: (d / "index.bin").write_bytes(b"?"), "no fold.json"),
        (lambda d: (d / "fold.json").write_text("{not json"), "cannot verify"),
        (lambda d: (d / "fold.json").write_text('{"fold_id": "0"}'), "cannot verify"),
    ],
)
def test_fold_dir_that_cannot_be_verified_is_refused(tmp_path, setup, match):
    (tmp_path / "0").mkdir()
    setup(tmp_path / "0")
    with pytest.raises(FoldReuseError, match=match):
        FoldArtifactDir(tmp_path, 0, fingerprint_indices([1, 2, 3]))


@pytest.mark.parametrize("fold_id", ["", "..", "../x", "a/b", ".hidden"])
def test_fold_ids_must_be_plain_directory_names(tmp_path, fold_id):
    with pytest.raises(ValueError, match="safe directory name"):
        FoldArtifactDir(tmp_path, fold_id, fingerprint_indices([1]))


def test_fold_dir_demands_a_real_fingerprint_and_plain_artifact_names(tmp_path):
    with pytest.raises(ValueError, match="fingerprint_indices"):
        FoldArtifactDir(tmp_path, 0, "abc")
    artifacts = FoldArtifactDir(tmp_path, 0, fingerprint_indices([1]))
    for name in ["fold.json", "../escape", "sub/dir"]:
        with pytest.raises(ValueError, match="artifact file name"):
            artifacts.file(name)
