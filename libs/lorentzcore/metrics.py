"""Drift and skill metrics: PSI and KS (batch and streaming), ROC AUC, precision@k, ECE.

Bins are half-open, [lo, hi), everywhere, and the outermost bins reach to -inf / +inf so a
value outside the reference range is counted, never dropped. NaN is rejected with a
ValueError rather than silently binned.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lorentzcore.constants import ECE_DEFAULT_BINS, KS_GRID_BINS, PSI_DEFAULT_BINS, PSI_EPS

__all__ = [
    "IncrementalKS",
    "IncrementalPSI",
    "expected_calibration_error",
    "ks_statistic",
    "precision_at_k",
    "psi",
    "quantile_edges",
    "roc_auc",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _samples(x: ArrayLike, name: str, *, allow_empty: bool = False) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} contains NaN")
    return arr


def _binary_labels(y: ArrayLike, n: int) -> IntArray:
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise ValueError(f"y_true must have shape ({n},), got {arr.shape}")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError("y_true must hold 0/1 labels")
    return arr.astype(np.int64)


# --- PSI -----------------------------------------------------------------------------------


def quantile_edges(reference: ArrayLike, bins: int = PSI_DEFAULT_BINS) -> FloatArray:
    """Bin edges [-inf, q_1, ..., q_{bins-1}, inf] at reference quantiles.

    Repeated quantiles (a discrete or constant reference) are merged, so there may be fewer
    than `bins` bins, but none is empty by construction on the reference.
    """
    ref = _samples(reference, "reference")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    cuts = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
    return np.concatenate([[-np.inf], cuts, [np.inf]])


def _validated_edges(edges: ArrayLike) -> FloatArray:
    arr = np.asarray(edges, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2 or np.any(np.isnan(arr)) or np.any(np.diff(arr) <= 0):
        raise ValueError("edges must be a strictly increasing 1-D array of at least 2 values")
    return arr


def _edges(ref: FloatArray, bins: int | ArrayLike) -> FloatArray:
    """Reference-quantile edges for a bin count, or the caller's explicit edges validated."""
    if isinstance(bins, int | np.integer):
        return quantile_edges(ref, int(bins))
    return _validated_edges(bins)


def _bin_index(cuts: FloatArray, x: FloatArray) -> NDArray[np.intp]:
    """Bin of each x for bins (-inf, c0), [c0, c1), ..., [c_last, inf)."""
    return np.searchsorted(cuts, x, side="right")


def _psi_from_proportions(ref: FloatArray, cur: FloatArray, eps: float) -> float:
    p = np.maximum(ref, eps)
    q = np.maximum(cur, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(
    reference: ArrayLike,
    current: ArrayLike,
    bins: int | ArrayLike = PSI_DEFAULT_BINS,
    *,
    eps: float = PSI_EPS,
) -> float:
    """Population stability index sum (q - p) ln(q / p) of `current` against `reference`.

    bins is either a number of reference-quantile bins or explicit strictly increasing edges;
    with explicit edges, values outside [edges[0], edges[-1]] count in the outermost bins.
    Proportions are floored at eps (PSI_EPS = 1e-4) so an empty bin gives a large finite term.
    """
    ref = _samples(reference, "reference")
    cur = _samples(current, "current")
    edges = _edges(ref, bins)
    cuts = edges[1:-1]
    n_bins = cuts.size + 1
    p = np.bincount(_bin_index(cuts, ref), minlength=n_bins) / ref.size
    q = np.bincount(_bin_index(cuts, cur), minlength=n_bins) / cur.size
    return _psi_from_proportions(p, q, eps)


class _BinCounts:
    """Counts per bin of everything seen, or of the last `window` samples (ring buffer).

    The ring holds each sample's bin index, so eviction is exact whatever the batch sizes.
    """

    def __init__(self, n_bins: int, window: int | None) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        self.n_bins = n_bins
        self.window = window
        self.counts = np.zeros(n_bins, dtype=np.int64)
        self._ring = np.zeros(window or 0, dtype=np.intp)
        self._pos = 0
        self._filled = 0

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, bin_index: NDArray[np.intp]) -> None:
        if self.window is None:
            self.counts += np.bincount(bin_index, minlength=self.n_bins)
            return
        if bin_index.size >= self.window:
            self._ring[:] = bin_index[-self.window :]
            self.counts[:] = np.bincount(self._ring, minlength=self.n_bins)
            self._pos = 0
            self._filled = self.window
            return
        slots = (self._pos + np.arange(bin_index.size)) % self.window
        occupied = slots[slots < self._filled] if self._filled < self.window else slots
        self.counts -= np.bincount(self._ring[occupied], minlength=self.n_bins)
        self.counts += np.bincount(bin_index, minlength=self.n_bins)
        self._ring[slots] = bin_index
        self._pos = (self._pos + bin_index.size) % self.window
        self._filled = min(self.window, self._filled + bin_index.size)

    def reset(self) -> None:
        self.counts[:] = 0
        self._pos = 0
        self._filled = 0


class IncrementalPSI:
    """PSI of a stream against fixed reference proportions, cumulative or over a window.

    value equals psi(reference, stream_so_far_or_last_window, edges) exactly, at O(batch)
    cost per update. It is NaN before the first sample.
    """

    def __init__(
        self,
        edges: ArrayLike,
        ref_proportions: ArrayLike,
        *,
        window: int | None = None,
        eps: float = PSI_EPS,
    ) -> None:
        self.edges = _validated_edges(edges)
        self._cuts = self.edges[1:-1]
        props = np.asarray(ref_proportions, dtype=np.float64)
        if props.shape != (self.edges.size - 1,):
            raise ValueError(f"need {self.edges.size - 1} reference proportions, got {props.shape}")
        if np.any(props < 0) or not math.isclose(float(props.sum()), 1.0, abs_tol=1e-9):
            raise ValueError("reference proportions must be non-negative and sum to 1")
        self.ref_proportions = props
        self.eps = eps
        self._counts = _BinCounts(props.size, window)

    @classmethod
    def from_reference(
        cls,
        reference: ArrayLike,
        bins: int | ArrayLike = PSI_DEFAULT_BINS,
        *,
        window: int | None = None,
        eps: float = PSI_EPS,
    ) -> IncrementalPSI:
        """Edges and proportions from a reference sample, as psi() would compute them."""
        ref = _samples(reference, "reference")
        edges = _edges(ref, bins)
        counts = np.bincount(_bin_index(edges[1:-1], ref), minlength=edges.size - 1)
        return cls(edges, counts / ref.size, window=window, eps=eps)

    @property
    def count(self) -> int:
        """Samples currently counted (at most `window`)."""
        return self._counts.total

    def update(self, batch: ArrayLike) -> IncrementalPSI:
        x = _samples(batch, "batch", allow_empty=True)
        self._counts.add(_bin_index(self._cuts, x))
        return self

    @property
    def value(self) -> float:
        total = self._counts.total
        if total == 0:
            return math.nan
        return _psi_from_proportions(self.ref_proportions, self._counts.counts / total, self.eps)

    def reset(self) -> None:
        self._counts.reset()


# --- KS ------------------------------------------------------------------------------------


def ks_statistic(a: ArrayLike, b: ArrayLike) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup_x |F_a(x) - F_b(x)| (exact, ties handled)."""
    a_sorted = np.sort(_samples(a, "a"))
    b_sorted = np.sort(_samples(b, "b"))
    points = np.concatenate([a_sorted, b_sorted])
    cdf_a = np.searchsorted(a_sorted, points, side="right") / a_sorted.size
    cdf_b = np.searchsorted(b_sorted, points, side="right") / b_sorted.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


class IncrementalKS:
    """KS distance of a stream from a fixed reference, in O(grid) memory.

    The stream is counted on bins cut at `grid_bins` reference quantiles c_i, each also cut
    just above (at the next float), so an atom of the reference (a repeated value such as a
    zero return) gets a bin of its own. Both CDFs are compared at the left limits F(c-) of
    the cuts, where both are known exactly. Inside a bin each CDF can move by at most the
    bin's mass, and not at all inside a single-value bin, which gives

        value <= exact KS <= value + error_bound,

    with error_bound the largest reference mass of a bin holding more than one value:
    ~1 / grid_bins. NaN before the first sample.
    """

    def __init__(
        self,
        reference: ArrayLike,
        grid_bins: int = KS_GRID_BINS,
        *,
        window: int | None = None,
    ) -> None:
        ref_sorted = np.sort(_samples(reference, "reference"))
        if grid_bins < 1:
            raise ValueError(f"grid_bins must be >= 1, got {grid_bins}")
        quantiles = np.quantile(ref_sorted, np.arange(1, grid_bins) / grid_bins)
        self._cuts = np.unique(np.concatenate([quantiles, np.nextafter(quantiles, np.inf)]))
        self._ref_cdf = np.searchsorted(ref_sorted, self._cuts, side="left") / ref_sorted.size
        lower = np.concatenate([[-np.inf], self._cuts])
        upper = np.concatenate([self._cuts, [np.inf]])
        mass = np.diff(np.concatenate([[0.0], self._ref_cdf, [1.0]]))
        single_value = np.nextafter(lower, np.inf) == upper
        self.error_bound = float(np.max(mass[~single_value], initial=0.0))
        self._counts = _BinCounts(self._cuts.size + 1, window)

    @property
    def count(self) -> int:
        return self._counts.total

    def update(self, batch: ArrayLike) -> IncrementalKS:
        x = _samples(batch, "batch", allow_empty=True)
        self._counts.add(_bin_index(self._cuts, x))
        return self

    @property
    def value(self) -> float:
        total = self._counts.total
        if total == 0:
            return math.nan
        if self._cuts.size == 0:  # grid_bins == 1: no cut, error_bound is 1
            return 0.0
        cur_cdf = np.cumsum(self._counts.counts[:-1]) / total  # F_cur(c_i-) per cut
        return float(np.max(np.abs(self._ref_cdf - cur_cdf)))

    def reset(self) -> None:
        self._counts.reset()


# --- skill ---------------------------------------------------------------------------------


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney) form; ties get average ranks.

    Equals P(score_pos > score_neg) + P(tie) / 2. Needs both classes present.
    """
    s = _samples(scores, "scores")
    y = _binary_labels(y_true, s.size)
    n_pos = int(y.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative label")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    average_rank = ends - (counts - 1) / 2.0
    rank_sum = float(np.sum(average_rank[inverse][y == 1]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def precision_at_k(y_true: ArrayLike, scores: ArrayLike, k: int) -> float:
    """Fraction of positives among the k highest scores.

    Ties straddling the cut are resolved by expectation (each tied item is in the top k with
    equal probability), so the value does not depend on the input order.
    """
    s = _samples(scores, "scores")
    y = _binary_labels(y_true, s.size)
    if not 1 <= k <= s.size:
        raise ValueError(f"k must be in [1, {s.size}], got {k}")
    threshold = np.partition(s, s.size - k)[s.size - k]
    above = s > threshold
    tied = s == threshold
    n_above = int(above.sum())
    expected_hits = y[above].sum() + (k - n_above) * y[tied].sum() / tied.sum()
    return float(expected_hits) / k


def expected_calibration_error(
    y_true: ArrayLike, probs: ArrayLike, n_bins: int = ECE_DEFAULT_BINS
) -> float:
    """sum_b (n_b / N) |mean(y_b) - mean(p_b)| over equal-width bins [i/B, (i+1)/B).

    The last bin also takes p == 1. Edges are i / B (correctly rounded), so p = 0.3 falls in
    [0.3, 0.4) as one would expect.
    """
    p = _samples(probs, "probs")
    y = _binary_labels(y_true, p.size)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if np.any((p < 0.0) | (p > 1.0)):
        raise ValueError("probs must lie in [0, 1]")
    edges = np.arange(n_bins + 1) / n_bins
    bin_of = np.minimum(np.searchsorted(edges, p, side="right") - 1, n_bins - 1)
    n_b = np.bincount(bin_of, minlength=n_bins)
    sum_y = np.bincount(bin_of, weights=y, minlength=n_bins)
    sum_p = np.bincount(bin_of, weights=p, minlength=n_bins)
    occupied = n_b > 0
    gaps = np.abs(sum_y[occupied] - sum_p[occupied]) / n_b[occupied]
    return float(np.sum(n_b[occupied] / p.size * gaps))
