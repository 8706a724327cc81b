"""Slow, obviously correct references for the lorentzcore numerics tests.

Each function follows the textbook definition with loops, exact rationals or mpmath, and
shares no code with the implementation under test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

import mpmath
import numpy as np

# --- hyperbolic ----------------------------------------------------------------------------


def mp_lorentz_distance(z: Sequence[float], w: Sequence[float], dps: int = 50) -> float:
    """acosh(x0 y0 - z.w) for the exact lifts of the float vectors z, w, in dps digits."""
    with mpmath.workdps(dps):
        zm = [mpmath.mpf(float(x)) for x in z]  # exact: mpf(float) does not round
        wm = [mpmath.mpf(float(x)) for x in w]
        x0 = mpmath.sqrt(1 + mpmath.fsum(x * x for x in zm))
        y0 = mpmath.sqrt(1 + mpmath.fsum(x * x for x in wm))
        cosh_d = x0 * y0 - mpmath.fsum(x * y for x, y in zip(zm, wm, strict=True))
        return float(mpmath.acosh(cosh_d))


def mp_acosh1p(s: float, dps: int = 50) -> float:
    with mpmath.workdps(dps):
        return float(mpmath.acosh(1 + mpmath.mpf(float(s))))


def exact_lorentz_inner(u: Sequence[float], v: Sequence[float]) -> Fraction:
    """-u0 v0 + sum u_i v_i in exact rational arithmetic."""
    terms = [Fraction(float(a)) * Fraction(float(b)) for a, b in zip(u, v, strict=True)]
    return -terms[0] + sum(terms[1:], Fraction(0))


def naive_lorentz_distance(z: np.ndarray, w: np.ndarray, dtype: type) -> np.ndarray:
    """The textbook acosh(-<u, v>_L) on lifted points, computed entirely in `dtype`."""
    z = np.asarray(z, dtype=dtype)
    w = np.asarray(w, dtype=dtype)
    one = dtype(1)
    x0 = np.sqrt(one + np.sum(z * z, axis=-1, dtype=dtype))
    y0 = np.sqrt(one + np.sum(w * w, axis=-1, dtype=dtype))
    minus_inner = x0 * y0 - np.sum(z * w, axis=-1, dtype=dtype)
    return np.arccosh(np.maximum(minus_inner, one)).astype(np.float64)


# --- kernels -------------------------------------------------------------------------------


def rbf_direct(d: float, length_scale: float) -> float:
    return math.exp(-(d * d) / (2.0 * length_scale * length_scale))


def periodic_direct(tau: float, period: float, length_scale: float) -> float:
    return math.exp(-2.0 * math.sin(math.pi * tau / period) ** 2 / length_scale**2)


def effective_neighbors_loop(w: Sequence[float]) -> float:
    total = 0.0
    total_sq = 0.0
    for x in w:
        total += x
        total_sq += x * x
    return 0.0 if total == 0.0 else total * total / total_sq


# --- metrics -------------------------------------------------------------------------------


def psi_loop(
    reference: Sequence[float], current: Sequence[float], cuts: Sequence[float], eps: float
) -> float:
    """PSI over bins (-inf, c0), [c0, c1), ..., [c_last, inf) with proportions floored at eps."""
    n_bins = len(cuts) + 1

    def bin_of(x: float) -> int:
        for i, c in enumerate(cuts):
            if x < c:
                return i
        return n_bins - 1

    ref_counts = [0] * n_bins
    cur_counts = [0] * n_bins
    for x in reference:
        ref_counts[bin_of(x)] += 1
    for x in current:
        cur_counts[bin_of(x)] += 1
    total = 0.0
    for r, c in zip(ref_counts, cur_counts, strict=True):
        p = max(r / len(reference), eps)
        q = max(c / len(current), eps)
        total += (q - p) * math.log(q / p)
    return total


def ks_loop(a: Sequence[float], b: Sequence[float]) -> float:
    """sup_x |F_a(x) - F_b(x)| evaluated at every sample point (where the sup is attained)."""
    best = 0.0
    for x in list(a) + list(b):
        fa = sum(1 for y in a if y <= x) / len(a)
        fb = sum(1 for y in b if y <= x) / len(b)
        best = max(best, abs(fa - fb))
    return best


def auc_pairs(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie), over all positive/negative pairs."""
    pos = [s for y, s in zip(y_true, scores, strict=True) if y == 1]
    neg = [s for y, s in zip(y_true, scores, strict=True) if y == 0]
    wins = 0.0
    for p in pos:
        for q in neg:
            wins += 1.0 if p > q else 0.5 if p == q else 0.0
    return wins / (len(pos) * len(neg))


def precision_at_k_all_orders(y_true: Sequence[int], scores: Sequence[float], k: int) -> float:
    """Mean precision@k over every way of breaking ties (all n! tie-break orders)."""
    n = len(scores)
    total = 0.0
    count = 0
    for tie_break in itertools.permutations(range(n)):
        order = sorted(range(n), key=lambda i: (-scores[i], tie_break[i]))
        total += sum(y_true[i] for i in order[:k]) / k
        count += 1
    return total / count


def ece_loop(y_true: Sequence[int], probs: Sequence[float], n_bins: int) -> float:
    """sum_b (n_b / N) |mean y_b - mean p_b| over bins [i/B, (i+1)/B), the last one closed."""
    total = 0.0
    n = len(probs)
    for i in range(n_bins):
        lo = i / n_bins
        hi = (i + 1) / n_bins
        members = [j for j, p in enumerate(probs) if lo <= p < hi or (i == n_bins - 1 and p == 1.0)]
        if not members:
            continue
        mean_y = sum(y_true[j] for j in members) / len(members)
        mean_p = sum(probs[j] for j in members) / len(members)
        total += len(members) / n * abs(mean_y - mean_p)
    return total


# --- validation ----------------------------------------------------------------------------


def purged_train_loop(
    times: Sequence[int], test_idx: Sequence[int], horizon: int, embargo: int
) -> list[int]:
    """Training indices allowed next to a test set, sample by sample.

    A sample i may train iff its label window [t_i, t_i + horizon] misses the forbidden span:
    from the first test bar to the end of the last test label window plus the embargo.
    """
    test = set(test_idx)
    start = min(times[j] for j in test)
    end = max(times[j] for j in test) + horizon + embargo
    keep = []
    for i, t in enumerate(times):
        if i in test:
            continue
        if t + horizon < start or t > end:
            keep.append(i)
    return keep
