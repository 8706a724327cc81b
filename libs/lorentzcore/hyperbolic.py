"""Lorentz (hyperboloid) model of hyperbolic space: curvature -1, time coordinate first.

A point is u = (x0, z) with <u, u>_L = -x0^2 + |z|^2 = -1 and x0 > 0, so the upper sheet is
the graph x0 = sqrt(1 + |z|^2) over the spatial part z. Distances use that fact.

Why not acosh(-<u, v>_L)? Far from the origin the product is a difference of two numbers of
size x0 * y0 that agree to many digits. In float32 a distance of 0.1 at radius 6 comes out
12% wrong (median), and at radius 8 most pairs come out as 0. Even exact arithmetic on
float64 ambient coordinates cannot do better than an absolute error of ~eps * x0 * y0 in
cosh d - 1, because rounding x0 to float64 already moved the point off the sheet by that
much: at radius 10 (|z| ~ 1.1e4) that is a 1% error for d = 1e-3.

So the distance is computed from the spatial parts, in a form without cancellation. With
W = |z ^ w|^2 = |z|^2 |w|^2 - (z.w)^2 (the squared area spanned by z and w),

    (cosh d - 1)(1 + x0 y0 + z.w) = |z - w|^2 + W,                          (exact identity)
    1 + x0 y0 + z.w = 1 + (1 + |z|^2 + |w|^2) / (x0 y0 + |z||w|) + (|z||w| + z.w),

and |z||w| + z.w is summed directly when z.w >= 0 and written as W / (|z||w| - z.w) when
z.w < 0. So s = cosh d - 1 is a sum of squares over a sum of positive terms, each of which
is formed without subtracting nearly equal numbers:

* |z - w|^2 forms the differences first (exact for nearby points, by Sterbenz).
* W has two direct forms, |z|^2|w|^2 - (z.w)^2 and (|a|^2|b|^2 - (a.b)^2) / 4 with
  a = z - w, b = z + w, whose absolute errors scale like eps |z|^2|w|^2 and
  eps |a|^2|b|^2 / 4. The one with the smaller scale is used when that scale is at most
  _DIRECT_FORM_MARGIN times |a|^2 + W, i.e. when it costs s only a few eps. Otherwise (z and
  w nearly collinear) W = |x|^2 |y_perp|^2 with x the shorter of z, w and y the shorter of
  a, b, y_perp formed explicitly: its error is ~eps |x||y| sqrt(W), i.e. at most
  ~eps min(|z|, |w|) / 2 relative to |a|^2 + W.

So s is accurate to a few eps in general and to ~eps * min(|z|, |w|) in the worst
(radial) direction: ~1e-12 at radius 10 (|z| ~ 1.1e4). The tests measure it against mpmath.
Then d = acosh1p(s), with a series path for small s. Consequences:

* s >= 0 by construction, so d(u, u) == 0 exactly and no clamp is ever needed here.
* Swapping the arguments only negates z - w (exactly), so the result is bitwise symmetric.
* The time coordinate of an ambient point is checked against the spatial part (SHEET_RTOL)
  but not used in the arithmetic: the distance is that between the exact lifts of the
  spatial parts.
* One compiled formula (_njit_numerator_terms, _njit_cosh_minus_one) serves every entry
  point, so they agree bitwise.

Clamp policy (ACOSH_CLAMP_EPS): acosh1p(s) maps s == 0 to exactly 0 (identical points) and
only an s < 0, which can arise solely from rounding in a caller's own Minkowski-product
arithmetic on distinct points, to the floor acosh(1 + ACOSH_CLAMP_EPS) ~ 1.41e-3: never NaN,
never a spurious 0 for distinct points. NaN propagates.

Non-finite inputs give NaN (never a silent 0), so callers can detect them and recompute.
"""

from __future__ import annotations

import math
from typing import TypeAlias

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from lorentzcore.constants import ACOSH_CLAMP_EPS, ACOSH_SERIES_THRESHOLD, SHEET_RTOL

FloatArray: TypeAlias = NDArray[np.float64]
AnyFloatArray: TypeAlias = NDArray[np.float32] | NDArray[np.float64]
#: Scalar inputs give a np.float64 (a float subclass); batched inputs give an array.
FloatResult: TypeAlias = NDArray[np.float64] | np.float64

__all__ = [
    "acosh1p",
    "lift_to_hyperboloid",
    "lorentz_distance",
    "lorentz_distance_from_spatial",
    "lorentz_distances_to_query",
    "lorentz_inner",
]

# Series acosh(1 + s) = sqrt(2 s) (1 + C1 s + C2 s^2 + C3 s^3 + O(s^4)).
_C1 = -1.0 / 12.0
_C2 = 3.0 / 160.0
_C3 = -5.0 / 896.0

_DEKKER_SPLITTER = 134217729.0  # 2**27 + 1: splits a float64 into two 26-bit halves


def _as_float64(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def _scalar_or_array(x: FloatArray) -> FloatResult:
    return x[()] if x.ndim == 0 else x


def _two_sum(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Knuth's TwoSum: s + e == a + b exactly."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a: FloatArray) -> tuple[FloatArray, FloatArray]:
    c = _DEKKER_SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Dekker's TwoProduct: p + e == a * b exactly (for |a|, |b| < ~1e290)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def lorentz_inner(u: ArrayLike, v: ArrayLike) -> FloatResult:
    """Minkowski product -u0 v0 + sum_i u_i v_i over the last axis, broadcasting the rest.

    Compensated (Ogita-Rump-Oishi Dot2: TwoProduct + TwoSum): the result is as accurate as
    if computed in twice float64 precision and then rounded, i.e. relative error ~eps plus
    ~eps^2 * sum |u_i v_i|. The product of nearby far-out points still inherits the
    representation error of the inputs; use the distance functions for distances.
    """
    u_arr = _as_float64(u)
    v_arr = _as_float64(v)
    if u_arr.ndim == 0 or v_arr.ndim == 0 or u_arr.shape[-1] != v_arr.shape[-1]:
        raise ValueError(
            f"coordinate axes differ or are missing: shapes {u_arr.shape} and {v_arr.shape}"
        )
    if u_arr.shape[-1] < 2:
        raise ValueError("Lorentz vectors need a time and at least one spatial coordinate")
    u_arr, v_arr = np.broadcast_arrays(u_arr, v_arr)
    p, s = _two_prod(-u_arr[..., 0], v_arr[..., 0])
    for i in range(1, u_arr.shape[-1]):
        h, r = _two_prod(u_arr[..., i], v_arr[..., i])
        p, q = _two_sum(p, h)
        s = s + (q + r)
    return _scalar_or_array(np.asarray(p + s))


def lift_to_hyperboloid(z: ArrayLike) -> FloatArray:
    """Map spatial vectors z in R^d (last axis) to u = (sqrt(1 + |z|^2), z) in R^(d+1)."""
    z_arr = _as_float64(z)
    if z_arr.ndim == 0 or z_arr.shape[-1] < 1:
        raise ValueError(f"need at least one spatial coordinate, got shape {z_arr.shape}")
    x0 = np.sqrt(1.0 + np.einsum("...k,...k->...", z_arr, z_arr))
    return np.concatenate([x0[..., None], z_arr], axis=-1)


def acosh1p(s: ArrayLike) -> FloatResult:
    """acosh(1 + s) without forming 1 + s, accurate to a few ulps for all s >= 0.

    s < ACOSH_SERIES_THRESHOLD uses the series (0 maps to exactly 0); larger s uses
    log1p(s + sqrt(s) sqrt(s + 2)), which has no s * s term and so stays finite up to
    s ~ 8e307. s < 0 is the clamp case described in the module docstring.
    """
    s_arr = _as_float64(s)
    s_arr = np.where(s_arr < 0.0, ACOSH_CLAMP_EPS, s_arr)
    small = s_arr < ACOSH_SERIES_THRESHOLD
    s_small = np.where(small, s_arr, 0.0)
    series = np.sqrt(2.0 * s_small) * (1.0 + s_small * (_C1 + s_small * (_C2 + s_small * _C3)))
    s_large = np.where(small, 1.0, s_arr)
    direct = np.log1p(s_large + np.sqrt(s_large) * np.sqrt(s_large + 2.0))
    return _scalar_or_array(np.where(small, series, direct))


# The tuning constants are passed in as arguments: numba's on-disk cache is keyed on this
# file only, so constants frozen into a cached kernel would go stale when constants.py changes.


@numba.njit(cache=True, nogil=True)
def _njit_acosh1p(s: float, clamp_eps: float, series_threshold: float) -> float:
    if s < 0.0:
        s = clamp_eps
    if s < series_threshold:
        return math.sqrt(2.0 * s) * (1.0 + s * (_C1 + s * (_C2 + s * _C3)))
    return math.log1p(s + math.sqrt(s) * math.sqrt(s + 2.0))


# A direct form of W is used when its error scale is at most this multiple of |a|^2 + W.
_DIRECT_FORM_MARGIN = 8.0


@numba.njit(cache=True, nogil=True, inline="always")
def _njit_wedge_by_projection(
    z: AnyFloatArray, w: AnyFloatArray, x_sign_z: float, x_sign_w: float, y_sign_w: float
) -> float:
    """|x|^2 |y - (x.y / |x|^2) x|^2 for x = x_sign_z z + x_sign_w w and y = z + y_sign_w w.

    Signs are 0 or +-1, so x and y are formed exactly as z, w, z - w or z + w.
    """
    xx = 0.0
    xy = 0.0
    for k in range(z.shape[0]):
        zk = np.float64(z[k])
        wk = np.float64(w[k])
        xk = x_sign_z * zk + x_sign_w * wk
        xx += xk * xk
        xy += xk * (zk + y_sign_w * wk)
    c = xy / xx
    rr = 0.0
    for k in range(z.shape[0]):
        zk = np.float64(z[k])
        wk = np.float64(w[k])
        r = (zk + y_sign_w * wk) - c * (x_sign_z * zk + x_sign_w * wk)
        rr += r * r
    return xx * rr


@numba.njit(cache=True, nogil=True, inline="always")
def _njit_numerator_terms(
    z: AnyFloatArray, w: AnyFloatArray, zz: float
) -> tuple[float, float, float, float]:
    """(|z - w|^2, W = |z ^ w|^2, |w|^2, z.w) in float64, given zz = |z|^2.

    W is chosen as in the module docstring. Every choice depends on (z, w) only through
    quantities that are invariant under swapping them, so the result is bitwise symmetric.
    """
    ww = 0.0
    zw = 0.0
    aa = 0.0
    ab = 0.0
    bb = 0.0
    for k in range(z.shape[0]):
        zk = np.float64(z[k])
        wk = np.float64(w[k])
        a = zk - wk
        b = zk + wk
        ww += wk * wk
        zw += zk * wk
        aa += a * a
        ab += a * b
        bb += b * b
    if aa == 0.0:
        return 0.0, 0.0, ww, zw  # identical points (NaN compares unequal and propagates)
    scale_zw = zz * ww
    scale_ab = 0.25 * (aa * bb)
    if scale_zw <= scale_ab:
        wedge = scale_zw - zw * zw
        scale = scale_zw
    else:
        wedge = scale_ab - 0.25 * (ab * ab)
        scale = scale_ab
    if not scale <= _DIRECT_FORM_MARGIN * (aa + wedge):  # also taken for NaN
        if zz < ww:
            wedge = _njit_wedge_by_projection(z, w, 1.0, 0.0, -1.0 if aa <= bb else 1.0)
        elif ww < zz:
            wedge = _njit_wedge_by_projection(z, w, 0.0, 1.0, -1.0 if aa <= bb else 1.0)
        else:  # |z| == |w|: project b off a, which treats z and w alike; |a ^ b| = 2 |z ^ w|
            wedge = 0.25 * _njit_wedge_by_projection(z, w, 1.0, -1.0, 1.0)
    if wedge < 0.0:
        wedge = 0.0
    return aa, wedge, ww, zw


@numba.njit(cache=True, nogil=True, inline="always")
def _njit_cosh_minus_one(aa: float, wedge: float, zz: float, ww: float, zw: float) -> float:
    """s = (|z - w|^2 + W) / (1 + x0 y0 + z.w) with the denominator summed from positive terms.

    Every operation is commutative in (zz, ww), so swapping the points is bitwise neutral.
    """
    if aa == 0.0:
        return 0.0
    norms = math.sqrt(zz) * math.sqrt(ww)
    aligned = norms + zw if zw >= 0.0 else wedge / (norms - zw)
    x0y0 = math.sqrt(1.0 + zz) * math.sqrt(1.0 + ww)
    return (aa + wedge) / (1.0 + (1.0 + (zz + ww)) / (x0y0 + norms) + aligned)


@numba.njit(cache=True, nogil=True)
def _njit_distances_rowwise(
    Z: FloatArray, W: FloatArray, out: FloatArray, clamp_eps: float, series_threshold: float
) -> None:
    """out[j] = d_L(lift(Z[j]), lift(W[j]))."""
    for j in range(Z.shape[0]):
        zz = 0.0
        for k in range(Z.shape[1]):
            zz += Z[j, k] * Z[j, k]
        aa, wedge, ww, zw = _njit_numerator_terms(Z[j], W[j], zz)
        out[j] = _njit_cosh_minus_one(aa, wedge, zz, ww, zw)
    for j in range(Z.shape[0]):  # separate loop: the sqrt/log1p chains of rows overlap
        out[j] = _njit_acosh1p(out[j], clamp_eps, series_threshold)


@numba.njit(cache=True, nogil=True)
def _njit_distances_to_query(
    zq: AnyFloatArray,
    Z: AnyFloatArray,
    out: FloatArray,
    clamp_eps: float,
    series_threshold: float,
) -> None:
    """out[j] = d_L(lift(zq), lift(Z[j])): the re-rank hot path (float32 or float64 inputs:
    numba compiles one version per input type; the distances are float64).

    Same formula as the row-wise kernel, split into three loops over the candidates so the
    long sqrt / div / log1p dependency chains of different rows overlap (~25% faster).
    """
    n = Z.shape[0]
    zz = 0.0
    for k in range(zq.shape[0]):
        zz += zq[k] * zq[k]
    wedge = np.empty(n)
    ww = np.empty(n)
    zw = np.empty(n)
    for j in range(n):
        out[j], wedge[j], ww[j], zw[j] = _njit_numerator_terms(zq, Z[j], zz)
    for j in range(n):
        out[j] = _njit_cosh_minus_one(out[j], wedge[j], zz, ww[j], zw[j])
    for j in range(n):
        out[j] = _njit_acosh1p(out[j], clamp_eps, series_threshold)


def _distances_of_broadcast_pairs(z: FloatArray, w: FloatArray) -> FloatResult:
    if z.ndim == 0 or w.ndim == 0 or z.shape[-1] != w.shape[-1]:
        raise ValueError(f"coordinate axes differ or are missing: shapes {z.shape} and {w.shape}")
    if z.shape[-1] < 1:
        raise ValueError("need at least one spatial coordinate")
    z_b, w_b = np.broadcast_arrays(z, w)
    lead = z_b.shape[:-1]
    Z = np.ascontiguousarray(z_b.reshape(-1, z_b.shape[-1]))
    W = np.ascontiguousarray(w_b.reshape(-1, w_b.shape[-1]))
    out = np.empty(Z.shape[0], dtype=np.float64)
    _njit_distances_rowwise(Z, W, out, ACOSH_CLAMP_EPS, ACOSH_SERIES_THRESHOLD)
    return _scalar_or_array(out.reshape(lead))


def lorentz_distance_from_spatial(z: ArrayLike, w: ArrayLike) -> FloatResult:
    """Distance between the lifts of spatial vectors z and w (last axis), broadcasting.

    This is the entry point for whitened vectors: no ambient coordinates are formed.
    """
    return _distances_of_broadcast_pairs(_as_float64(z), _as_float64(w))


def _check_on_upper_sheet(u: FloatArray, name: str) -> None:
    """Refuse points whose time coordinate disagrees with sqrt(1 + |z|^2) (NaN passes)."""
    z = u[..., 1:]
    x0 = np.sqrt(1.0 + np.einsum("...k,...k->...", z, z))
    off_sheet = np.abs(u[..., 0] - x0) > SHEET_RTOL * x0
    if np.any(off_sheet):
        raise ValueError(
            f"{name} has {int(np.count_nonzero(off_sheet))} point(s) off the upper sheet "
            f"(|u0 - sqrt(1 + |z|^2)| > {SHEET_RTOL} * u0); lift spatial vectors with "
            "lift_to_hyperboloid or use lorentz_distance_from_spatial"
        )


def lorentz_distance(u: ArrayLike, v: ArrayLike) -> FloatResult:
    """Geodesic distance between points u, v on the upper sheet (last axis, time first).

    The time coordinates are validated (SHEET_RTOL) and then ignored: the spatial parts carry
    the full information, see the module docstring.
    """
    u_arr = _as_float64(u)
    v_arr = _as_float64(v)
    if u_arr.ndim == 0 or v_arr.ndim == 0 or u_arr.shape[-1] != v_arr.shape[-1]:
        raise ValueError(
            f"coordinate axes differ or are missing: shapes {u_arr.shape} and {v_arr.shape}"
        )
    if u_arr.shape[-1] < 2:
        raise ValueError("Lorentz vectors need a time and at least one spatial coordinate")
    _check_on_upper_sheet(u_arr, "u")
    _check_on_upper_sheet(v_arr, "v")
    return _distances_of_broadcast_pairs(u_arr[..., 1:], v_arr[..., 1:])


def lorentz_distances_to_query(zq: ArrayLike, Z: ArrayLike) -> FloatArray:
    """d_L from one spatial query zq (d,) to each row of Z (n, d): the re-rank hot path.

    Z may be float32 (e.g. read from the vector store) or float64; the arithmetic is float64
    either way and the values are identical to lorentz_distance_from_spatial's.
    """
    zq_arr = np.ascontiguousarray(zq, dtype=np.float64)
    Z_arr = np.asarray(Z)
    if Z_arr.dtype != np.float32:
        Z_arr = Z_arr.astype(np.float64, copy=False)
    Z_arr = np.ascontiguousarray(Z_arr)
    if zq_arr.ndim != 1 or Z_arr.ndim != 2 or Z_arr.shape[1] != zq_arr.shape[0]:
        raise ValueError(f"need zq (d,) and Z (n, d), got {zq_arr.shape} and {Z_arr.shape}")
    out = np.empty(Z_arr.shape[0], dtype=np.float64)
    _njit_distances_to_query(zq_arr, Z_arr, out, ACOSH_CLAMP_EPS, ACOSH_SERIES_THRESHOLD)
    return out
