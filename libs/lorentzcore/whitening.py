"""Robust whitening: Tyler's M-estimator of scatter with shrinkage, and the affine map it defines.

Financial features are heavy-tailed, so a sample covariance is dominated by a handful of
extreme bars. Tyler's estimator only uses the *direction* of each centred observation, so it
recovers the shape matrix of any elliptical distribution (Student-t, Cauchy, ...) and is
insensitive to a few gross outliers.

Estimator (all in float64)
--------------------------
* Location and shape are estimated *jointly* (Hettmansperger & Randles 2002): every
  iteration takes one Weiszfeld step of the spatial median measured in the current
  whitened metric, then one Tyler fixed-point step on the residuals. Unlike a plain
  spatial median computed beforehand, the joint estimate is affine equivariant, so the
  fitted whitening does not depend on the units of the features. Rows that sit exactly at
  the current location have no direction; they are left out of both sums and the location
  step is damped as in Vardi & Zhang (2000), so nothing is ever divided by zero.
* Shape step (regularised Tyler, Chen, Wiesel & Hero 2011):
  ``S <- (1 - rho) * d / n * sum_i r_i r_i^T / (r_i^T S^-1 r_i) + rho * I``, then trace
  normalised to ``d``. Quadratic forms come from triangular solves with the Cholesky
  factor of ``S``; no inverse is formed. Each iteration checks the trace and positive
  definiteness and raises :class:`WhiteningError` when either fails.
* Shrinkage (``shrinkage=None``): the oracle-approximating coefficient of Chen, Wiesel &
  Hero (2011, eq. 13), computed from the normalised sample covariance of the observation
  directions. It is adaptive by construction: ~0 when n >> d and the shape is far from
  the target, growing as n approaches d. It is clipped to the range where the regularised
  fixed point exists and is unique, ``rho > 1 - n/d``. The identity target is only
  meaningful in comparable units, so the iteration runs on features divided by their
  robust (MAD) scales; the target is therefore the diagonal of robust variances in the
  original units. For ``shrinkage=0`` this pre-scaling is exact (affine equivariance).
* Scale: Tyler's shape has no scale. :class:`TylerResult` also carries a robust,
  Gaussian-consistent scale (median Mahalanobis distance matched to the chi-square
  median), which :meth:`Whitener.from_tyler` folds into the whitening map so that
  whitened Gaussian data has identity covariance, not just identity shape.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ConvergenceReport",
    "TylerResult",
    "Whitener",
    "WhiteningError",
    "tyler_scatter",
]

WHITENER_FORMAT_VERSION = 1

# Smallest eigenvalue accepted for a scatter normalised to trace d (mean eigenvalue 1):
# below this the whitening map would amplify noise by > 1e5 and is meaningless.
_EIGMIN_FLOOR = 1e-10
# Relative tolerance on the trace after normalisation (only fails on non-finite values).
_TRACE_RTOL = 1e-9
# A residual whose squared Mahalanobis norm is below this fraction of the median is
# treated as sitting at the location: its direction is rounding noise.
_AT_LOCATION_RTOL = 1e-24
# rho must exceed 1 - n/d for the regularised fixed point to exist; stay clear of the edge.
_RHO_MARGIN = 0.1


class WhiteningError(ValueError):
    """Invalid input, a failed invariant during the fit, or an unreadable whitener file."""


@dataclass(frozen=True, slots=True)
class ConvergenceReport:
    """How the fixed point ended; kept with the artifact so a fit can be audited later."""

    iterations: int
    converged: bool
    eigmin: float
    trace: float
    shrinkage: float
    final_change: float
    n_at_location: int


@dataclass(frozen=True, slots=True)
class TylerResult:
    """Shape (trace d), robust location, lower Cholesky factor of the shape, and a scale.

    ``scale**2 * scatter`` is Gaussian-consistent: for normal data it estimates the
    covariance matrix itself (``Whitener.from_tyler(rescale=True)`` folds the scale in).
    """

    scatter: NDArray[np.float64]
    location: NDArray[np.float64]
    cholesky: NDArray[np.float64]
    scale: float
    report: ConvergenceReport


def _forward_substitute(L: NDArray[np.float64], B: NDArray[np.float64]) -> NDArray[np.float64]:
    """Solve ``L Y = B`` for lower-triangular ``L`` (d x d) and ``B`` (d x m), row by row.

    numpy has no triangular solver; ``np.linalg.solve`` would LU-factorise ``L`` again.
    Each step is one BLAS matrix-vector product over the m right-hand sides (contiguous rows).
    """
    d = L.shape[0]
    Y = np.empty_like(B)
    Y[0] = B[0] / L[0, 0]
    for j in range(1, d):
        Y[j] = (B[j] - L[j, :j] @ Y[:j]) / L[j, j]
    return Y


def _chi2_median(d: int) -> float:
    """Median of chi-square(d) by Wilson-Hilferty (rel. error < 1e-3 for d >= 2; exact-ish d=1)."""
    if d == 1:
        return 0.454936423119572  # norm.ppf(0.75) ** 2
    return d * (1.0 - 2.0 / (9.0 * d)) ** 3


def _validate_input(X: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise WhiteningError(f"X must be a 2-D array (n, d); got shape {arr.shape}")
    n, d = arr.shape
    if d < 1:
        raise WhiteningError("X must have at least one column")
    if n < 2:
        raise WhiteningError(f"X needs at least 2 rows to estimate a scatter; got n={n}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise WhiteningError(f"X must be real-valued; got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise WhiteningError(
            f"X contains NaN or inf in {bad.size} row(s), first at rows {bad[:5].tolist()}"
        )
    return arr


def _oracle_shrinkage(Y: NDArray[np.float64]) -> float:
    """Chen-Wiesel-Hero (2011) oracle-approximating shrinkage toward I for Tyler's estimator.

    ``Y`` is centred (n x d). With directions ``s_i = y_i / |y_i|`` and
    ``R = d/n * sum_i s_i s_i^T`` (trace d):
    ``rho = (d^2 + (1 - 2/d) tr R^2) / ((d^2 - n d - 2n) + (n + 1 + 2(n-1)/d) tr R^2)``.
    """
    norms = np.linalg.norm(Y, axis=1)
    S = Y[norms > 0] / norms[norms > 0, None]
    n, d = S.shape
    if d == 1:
        return 0.0  # a 1 x 1 shape is always [[1]]; there is nothing to shrink
    if n == 0:
        return 1.0
    R = (d / n) * (S.T @ S)
    tr_r2 = float(np.sum(R * R))
    num = d * d + (1.0 - 2.0 / d) * tr_r2
    den = (d * d - n * d - 2.0 * n) + (n + 1.0 + 2.0 * (n - 1.0) / d) * tr_r2
    if not den > 0:
        return 1.0
    return float(num / den)


def _rho_floor(n_eff: int, d: int) -> float:
    """Smallest admissible rho: the regularised fixed point needs ``rho > 1 - n/d``."""
    if n_eff > d:
        return 0.0
    return 1.0 - (1.0 - _RHO_MARGIN) * n_eff / d


def tyler_scatter(
    X: ArrayLike,
    shrinkage: float | None = None,
    center: bool = True,
    max_iter: int = 500,
    tol: float = 1e-7,
) -> TylerResult:
    """Fit Tyler's shape matrix (trace ``d``) and a robust location to the rows of ``X``.

    Args:
        X: (n, d) observations, finite, n >= 2.
        shrinkage: ``None`` for the adaptive Chen-Wiesel-Hero coefficient; a float in
            [0, 1] to fix it. ``0`` is plain Tyler and needs more than d rows in general
            position; a fixed value below ``1 - n/d`` is rejected.
        center: estimate the location jointly (Hettmansperger-Randles). ``False`` treats
            the data as already centred at the origin.
        max_iter: iteration cap; a non-converged fit warns and sets ``report.converged``.
        tol: relative change of the shape (Frobenius) and of the location (in units of
            the median whitened radius) that counts as converged.

    Raises:
        WhiteningError: bad input, or the scatter loses its trace or positive definiteness.
    """
    Xv = _validate_input(X)
    n, d = Xv.shape
    if shrinkage is not None and not (0.0 <= float(shrinkage) <= 1.0):
        raise WhiteningError(f"shrinkage must be None or in [0, 1]; got {shrinkage}")
    if max_iter < 1:
        raise WhiteningError(f"max_iter must be >= 1; got {max_iter}")
    if not tol > 0:
        raise WhiteningError(f"tol must be > 0; got {tol}")

    # Robust per-feature scales put features in comparable units (see module docstring).
    mu = np.median(Xv, axis=0) if center else np.zeros(d)
    mad = np.median(np.abs(Xv - mu), axis=0)
    std = Xv.std(axis=0)
    unit = np.where(mad > 0, mad, np.where(std > 0, std, 1.0))
    Y = Xv / unit
    mu = mu / unit

    if shrinkage is None:
        rho = min(1.0, max(_oracle_shrinkage(Y - mu), _rho_floor(n, d)))
    else:
        rho = float(shrinkage)

    S = np.eye(d)
    L = np.eye(d)
    Yt = np.ascontiguousarray(Y.T)  # (d, n): rows contiguous for the substitutions
    converged = False
    change = np.inf
    n_at = 0
    it = 0
    for it in range(1, max_iter + 1):
        Rt = Yt - mu[:, None]
        Zt = _forward_substitute(L, Rt)
        q = np.einsum("ij,ij->j", Zt, Zt)
        q_med = float(np.median(q))
        active = q > _AT_LOCATION_RTOL * q_med if q_med > 0 else q > 0
        n_eff = int(active.sum())
        n_at = n - n_eff
        if n_eff == 0:
            raise WhiteningError("all rows coincide with the location; the scatter is undefined")
        floor = _rho_floor(n_eff, d)
        if shrinkage is None:
            rho = max(rho, floor)  # rows that reached the location no longer count
        elif rho < floor or (rho == 0.0 and n_eff <= d):
            raise WhiteningError(
                f"shrinkage={rho:g} is too small for {n_eff} usable rows in dimension {d}: "
                f"need shrinkage >= {floor:.3g} (pass shrinkage=None for the adaptive value)"
            )
        q_act = q[active]
        Ra = Rt[:, active]

        # Location: one Weiszfeld step in the whitened metric, damped by the number of rows
        # sitting at the current point (Vardi & Zhang 2000).
        mu_step = np.zeros(d)
        loc_change = 0.0
        if center:
            inv_r = 1.0 / np.sqrt(q_act)
            delta = (Ra @ inv_r) / inv_r.sum()
            if n_at:
                pull = float(np.linalg.norm(Zt[:, active] @ inv_r))
                delta *= max(0.0, 1.0 - n_at / pull) if pull > 0 else 0.0
            mu_step = delta
            loc_change = float(
                np.linalg.norm(_forward_substitute(L, delta[:, None])) / np.sqrt(q_med)
            )

        # Shape: regularised Tyler step, then trace normalisation and the invariant checks.
        S_new = (Ra / q_act) @ Ra.T * ((1.0 - rho) * d / n_eff)
        if rho > 0:
            S_new[np.diag_indices(d)] += rho
        S_new = 0.5 * (S_new + S_new.T)
        S_new *= d / np.trace(S_new)
        _check_scatter(S_new, d, it)
        try:
            L = np.linalg.cholesky(S_new)
        except np.linalg.LinAlgError as exc:
            raise WhiteningError(
                f"scatter is not positive definite at iteration {it} (Cholesky failed); the "
                "data may be rank-deficient - use shrinkage > 0"
            ) from exc

        change = max(float(np.linalg.norm(S_new - S) / np.linalg.norm(S)), loc_change)
        S = S_new
        mu = mu + mu_step
        if change < tol:
            converged = True
            break

    if not converged:
        warnings.warn(
            f"Tyler fixed point did not converge in {max_iter} iterations "
            f"(last relative change {change:.3g} > tol {tol:g})",
            RuntimeWarning,
            stacklevel=2,
        )

    # Back to the original units: S_x = D S D, renormalised to trace d, refactorised.
    S_x = S * np.outer(unit, unit)
    factor = d / np.trace(S_x)
    S_x *= factor
    S_x = 0.5 * (S_x + S_x.T)
    L_x = np.linalg.cholesky(S_x)
    location = mu * unit
    eigmin = float(np.linalg.eigvalsh(S_x)[0])

    # Gaussian-consistent scale: median squared Mahalanobis radius matched to chi2_d.
    Zt = _forward_substitute(L_x, np.ascontiguousarray((Xv - location).T))
    q = np.einsum("ij,ij->j", Zt, Zt)
    scale = float(np.sqrt(np.median(q) / _chi2_median(d)))
    if not (np.isfinite(scale) and scale > 0):
        scale = 1.0

    report = ConvergenceReport(
        iterations=it,
        converged=converged,
        eigmin=eigmin,
        trace=float(np.trace(S_x)),
        shrinkage=rho,
        final_change=float(change),
        n_at_location=n_at,
    )
    return TylerResult(scatter=S_x, location=location, cholesky=L_x, scale=scale, report=report)


def _check_scatter(S: NDArray[np.float64], d: int, it: int) -> None:
    """Invariants of every iterate: finite, trace d, smallest eigenvalue above the floor."""
    if not np.isfinite(S).all():
        raise WhiteningError(f"scatter became non-finite at iteration {it}")
    tr = float(np.trace(S))
    if abs(tr - d) > _TRACE_RTOL * d:
        raise WhiteningError(f"scatter trace {tr!r} != {d} after normalisation at iteration {it}")
    eigmin = float(np.linalg.eigvalsh(S)[0])
    if not eigmin > _EIGMIN_FLOOR:
        raise WhiteningError(
            f"scatter is not positive definite at iteration {it} (eigmin={eigmin:.3g}); the "
            "data may be rank-deficient (constant or collinear columns) - use shrinkage > 0"
        )


@dataclass(frozen=True)
class Whitener:
    """The affine map ``z = L^-1 (x - location)``.

    ``L^-1`` is formed once, by forward substitution, and applied as a matmul: with d ~ 16
    a (d x d) product is a few hundred flops and avoids a per-call solve. L is the
    Cholesky factor of a trace-normalised, eigmin-checked scatter, so its condition number
    is the square root of the scatter's and the explicit triangular inverse loses nothing
    measurable. float32 inputs use float32 copies of the map (the scorer's fast path);
    anything else is computed in float64.
    """

    location: NDArray[np.float64]
    cholesky: NDArray[np.float64]
    _linv_t64: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _linv_t32: NDArray[np.float32] = field(init=False, repr=False, compare=False)
    _loc32: NDArray[np.float32] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        loc = np.array(self.location, dtype=np.float64)
        L = np.array(self.cholesky, dtype=np.float64)
        if loc.ndim != 1 or L.shape != (loc.size, loc.size):
            raise WhiteningError(
                f"location must be (d,) and cholesky (d, d); got {loc.shape} and {L.shape}"
            )
        if not (np.isfinite(loc).all() and np.isfinite(L).all()):
            raise WhiteningError("location and cholesky must be finite")
        if np.any(np.triu(L, 1) != 0) or not np.all(np.diag(L) > 0):
            raise WhiteningError("cholesky must be lower triangular with a positive diagonal")
        loc.setflags(write=False)
        L.setflags(write=False)
        linv_t = np.ascontiguousarray(_forward_substitute(L, np.eye(loc.size)).T)
        linv_t.setflags(write=False)
        object.__setattr__(self, "location", loc)
        object.__setattr__(self, "cholesky", L)
        object.__setattr__(self, "_linv_t64", linv_t)
        object.__setattr__(self, "_linv_t32", linv_t.astype(np.float32))
        object.__setattr__(self, "_loc32", loc.astype(np.float32))

    @classmethod
    def from_tyler(cls, result: TylerResult, *, rescale: bool = True) -> Whitener:
        """Whitener of a fit; ``rescale`` folds ``result.scale`` in so Gaussian z ~ N(0, I)."""
        L = result.cholesky * (result.scale if rescale else 1.0)
        return cls(location=result.location, cholesky=L)

    @classmethod
    def fit(
        cls,
        X: ArrayLike,
        shrinkage: float | None = None,
        center: bool = True,
        max_iter: int = 500,
        tol: float = 1e-7,
    ) -> Whitener:
        """``Whitener.from_tyler(tyler_scatter(X, ...))`` with the Gaussian-consistent scale."""
        return cls.from_tyler(tyler_scatter(X, shrinkage, center, max_iter, tol))

    @property
    def dim(self) -> int:
        return int(self.location.size)

    def transform(self, X: ArrayLike) -> NDArray[np.floating]:
        """Whiten one vector (d,) or rows (n, d); float32 in gives float32 out.

        Non-finite inputs propagate (no check here: the scorer's float64 fallback owns that).
        """
        arr = np.asarray(X)
        if arr.shape[-1:] != (self.dim,) or arr.ndim > 2:
            raise WhiteningError(
                f"expected shape (d,) or (n, d) with d={self.dim}; got {arr.shape}"
            )
        if arr.dtype == np.float32:
            return (arr - self._loc32) @ self._linv_t32
        return (arr.astype(np.float64, copy=False) - self.location) @ self._linv_t64

    def inverse_transform(self, Z: ArrayLike) -> NDArray[np.float64]:
        """Map whitened vectors back to feature space: ``x = L z + location``."""
        arr = np.asarray(Z, dtype=np.float64)
        return arr @ self.cholesky.T + self.location

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an ``.npz`` (no pickled objects) atomically; returns the path written."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    format_version=np.int64(WHITENER_FORMAT_VERSION),
                    location=self.location,
                    cholesky=self.cholesky,
                )
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Whitener:
        """Read a file written by :meth:`save`; refuses pickles, other versions, bad shapes."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                missing = {"format_version", "location", "cholesky"} - set(data.files)
                if missing:
                    raise WhiteningError(f"{path}: missing arrays {sorted(missing)}")
                version = int(data["format_version"])
                if version != WHITENER_FORMAT_VERSION:
                    raise WhiteningError(
                        f"{path}: format_version {version}, expected {WHITENER_FORMAT_VERSION}"
                    )
                return cls(location=data["location"], cholesky=data["cholesky"])
        except WhiteningError as exc:
            if str(path) in str(exc):
                raise
            raise WhiteningError(f"{path}: {exc}") from exc
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise WhiteningError(f"{path}: unreadable whitener file ({exc})") from exc
