"""Purged K-fold cross-validation with embargo, and per-fold artifact directories.

Labels look `horizon` bars ahead, so sample i's label depends on bars [t_i, t_i + horizon]
and the test fold's labels span [t_start, t_end + horizon]. A training sample whose label
window touches that span, or the `embargo` bars after it, would leak test information
(López de Prado, Advances in Financial Machine Learning, ch. 7): it is purged. Everything
fitted on a fold (whitening, ANN index) lives in that fold's artifact directory, which
records a fingerprint of the training set and refuses to be reused for any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Fold",
    "FoldArtifactDir",
    "FoldReuseError",
    "fingerprint_indices",
    "no_information_overlap",
    "purged_kfold_splits",
]

IntArray = NDArray[np.int64]

_FOLD_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FINGERPRINT_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
_MANIFEST_FORMAT = 1


@dataclass(frozen=True, eq=False)
class Fold:
    """One split: sorted, read-only sample indices into the `times` it was built from."""

    fold_id: int
    train_idx: IntArray
    test_idx: IntArray


def _bar_times(times: ArrayLike) -> IntArray:
    arr = np.asarray(times)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"times must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"times must be integer bar indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _non_negative_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer number of bars, got {value!r}")
    return int(value)


def _read_only(idx: NDArray[np.intp]) -> IntArray:
    out = np.sort(idx).astype(np.int64)
    out.setflags(write=False)
    return out


def _allowed_train(
    times: IntArray, t_start: int, t_end: int, horizon: int, embargo: int
) -> NDArray[np.bool_]:
    """Samples whose label window [t, t + horizon] misses [t_start, t_end + horizon + embargo]."""
    return (times + horizon < t_start) | (times > t_end + horizon + embargo)


def purged_kfold_splits(
    times: ArrayLike, n_splits: int, embargo: int, horizon: int = 0
) -> list[Fold]:
    """K folds of contiguous test blocks in time, with purged and embargoed training sets.

    times are per-sample bar indices, in any order and possibly repeated (several samples
    per bar); samples of one bar always share a fold. Test blocks hold about n / n_splits
    samples each and together test every sample exactly once. Training samples are those
    whose label window [t, t + horizon] misses the test labels' span and the `embargo` bars
    after it, before or after the test block.
    """
    t = _bar_times(times)
    embargo = _non_negative_int("embargo", embargo)
    horizon = _non_negative_int("horizon", horizon)
    if isinstance(n_splits, bool) or not isinstance(n_splits, int | np.integer) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    order = np.argsort(t, kind="stable")
    sorted_t = t[order]
    ideal = np.round(np.arange(1, n_splits) * t.size / n_splits).astype(np.int64)
    # Move each cut to the start of its bar, so no bar is split between two folds.
    cuts = np.searchsorted(sorted_t, sorted_t[np.minimum(ideal, t.size - 1)], side="left")
    bounds = np.concatenate([[0], cuts, [t.size]])
    if np.any(np.diff(bounds) <= 0):
        raise ValueError(
            f"cannot cut {np.unique(t).size} distinct bars into {n_splits} non-empty test blocks"
        )
    folds = []
    for k in range(n_splits):
        test = order[bounds[k] : bounds[k + 1]]
        t_start, t_end = int(sorted_t[bounds[k]]), int(sorted_t[bounds[k + 1] - 1])
        train = np.flatnonzero(_allowed_train(t, t_start, t_end, horizon, embargo))
        if train.size == 0:
            raise ValueError(f"fold {k} has no training samples left after purge and embargo")
        folds.append(Fold(fold_id=k, train_idx=_read_only(train), test_idx=_read_only(test)))
    return folds


def no_information_overlap(
    folds: list[Fold], times: ArrayLike, horizon: int, *, embargo: int = 0
) -> bool:
    """True iff no fold trains on a test sample or on a label window that touches the
    test labels' span or its embargo. Returns False (rather than raising) on any violation,
    so it can gate a pipeline step; malformed input (indices out of range) still raises.
    """
    t = _bar_times(times)
    horizon = _non_negative_int("horizon", horizon)
    embargo = _non_negative_int("embargo", embargo)
    for fold in folds:
        train = np.asarray(fold.train_idx, dtype=np.int64)
        test = np.asarray(fold.test_idx, dtype=np.int64)
        if test.size == 0:
            return False
        for idx in (train, test):
            if idx.size and (idx.min() < 0 or idx.max() >= t.size):
                raise IndexError(f"fold {fold.fold_id} indexes outside times (size {t.size})")
        if np.intersect1d(train, test).size:
            return False
        t_test = t[test]
        allowed = _allowed_train(t[train], int(t_test.min()), int(t_test.max()), horizon, embargo)
        if not np.all(allowed):
            return False
    return True


# --- fold artifacts ------------------------------------------------------------------------


class FoldReuseError(RuntimeError):
    """An artifact directory belongs to another fold or training set (or cannot be verified)."""


def fingerprint_indices(indices: ArrayLike) -> str:
    """'sha256:<hex>' of the sorted indices as little-endian int64: order- and dtype-blind."""
    idx = np.sort(np.asarray(indices).astype(np.int64, casting="safe").ravel())
    return "sha256:" + hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest()


class FoldArtifactDir:
    """root/<fold_id>/ with a fold.json recording the fold id and training-set fingerprint.

    Opening creates the directory and manifest, or verifies an existing manifest; a
    different fold id or fingerprint, an unreadable manifest, or an unclaimed non-empty
    directory raises FoldReuseError. The manifest is JSON and is published atomically and
    exclusively (hard link of a complete temp file), so two processes racing for one
    directory cannot both claim it with different training sets.
    """

    MANIFEST = "fold.json"

    def __init__(self, root: str | os.PathLike[str], fold_id: int | str, train_fingerprint: str):
        self.fold_id = str(fold_id)
        if not _FOLD_ID_PATTERN.fullmatch(self.fold_id):
            raise ValueError(f"fold_id {self.fold_id!r} is not a safe directory name")
        if not _FINGERPRINT_PATTERN.fullmatch(train_fingerprint):
            raise ValueError("train_fingerprint must come from fingerprint_indices()")
        self.train_fingerprint = train_fingerprint
        self.path = Path(root) / self.fold_id
        manifest = self.path / self.MANIFEST
        if not manifest.exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise FoldReuseError(f"{self.path} holds files but no {self.MANIFEST}")
            self.path.mkdir(parents=True, exist_ok=True)
            self._publish_manifest(manifest)
        self._verify_manifest(manifest)

    @classmethod
    def for_fold(cls, root: str | os.PathLike[str], fold: Fold) -> FoldArtifactDir:
        return cls(root, fold.fold_id, fingerprint_indices(fold.train_idx))

    def file(self, name: str) -> Path:
        """Path of an artifact inside the directory (a plain file name, not the manifest)."""
        if not _FOLD_ID_PATTERN.fullmatch(name) or name == self.MANIFEST:
            raise ValueError(f"{name!r} is not a valid artifact file name")
        return self.path / name

    def _publish_manifest(self, manifest: Path) -> None:
        record = {
            "format": _MANIFEST_FORMAT,
            "fold_id": self.fold_id,
            "train_fingerprint": self.train_fingerprint,
        }
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".fold.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # lost a race: verify the winner's
                os.link(tmp, manifest)
        finally:
            os.unlink(tmp)

    def _verify_manifest(self, manifest: Path) -> None:
        try:
            record = json.loads(manifest.read_text(encoding="utf-8"))
            recorded = (record["fold_id"], record["train_fingerprint"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FoldReuseError(f"cannot verify {manifest}: {exc}") from exc
        if recorded != (self.fold_id, self.train_fingerprint):
            raise FoldReuseError(
                f"{self.path} belongs to fold {recorded[0]!r} with training set "
                f"{recorded[1]}, not fold {self.fold_id!r} with {self.train_fingerprint}"
            )
