"""Baselines a model must beat, fitted on the same training fold and features.

* logistic regression (ridge-penalised, Newton / IRLS in numpy: scikit-learn is a test-only
  dependency and ten lines of Newton are exact for this convex problem);
* momentum / reversal: sign(logret_1) with its direction fitted on the training fold (a
  fixed sign scored 0.486 on the default data where the fitted rule, reversal in every
  fold, scores 0.515: a fixed sign is a straw man);
* prior: the training fold's up rate for everyone (hit rate of "always the majority");
* Euclidean k-NN: the same K neighbours by plain L2 on standardised features, equal
  votes, no kernels: the ablation of the geometry (Tyler whitening, Lorentz lift, kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lorentzcore.kernels import fit_prior_strength, shrink_to_base_rate

__all__ = ["EuclideanKNN", "LogisticRegression", "MomentumRule", "PriorRule"]

FloatArray = NDArray[np.float64]


def _sigmoid(eta: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * eta))  # no overflow for any finite eta


@dataclass(frozen=True)
class LogisticRegression:
    """P(y = 1 | x) = sigmoid(b + w . (x - mean) / std), fitted by penalised Newton steps."""

    mean: FloatArray
    std: FloatArray
    coef: FloatArray  # (d + 1,): intercept first
    iterations: int
    converged: bool

    @classmethod
    def fit(
        cls,
        X: ArrayLike,
        y: ArrayLike,
        *,
        l2: float = 1.0,
        max_iter: int = 100,
        tol: float = 1e-10,
    ) -> LogisticRegression:
        """Minimise the negative log-likelihood + l2/2 |w|^2 (intercept unpenalised).

        Newton's method with step halving: the objective is strictly convex (l2 > 0), so it
        converges in a handful of steps to the unique optimum, separable data included.
        """
        Xa = np.asarray(X, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if Xa.ndim != 2 or ya.shape != (Xa.shape[0],) or Xa.shape[0] == 0:
            raise ValueError(f"X {Xa.shape} and y {ya.shape} do not align")
        if not np.all((ya == 0) | (ya == 1)):
            raise ValueError("y must hold 0/1 labels")
        if l2 <= 0:
            raise ValueError("l2 must be > 0 (it keeps separable folds finite)")
        mean = Xa.mean(axis=0)
        std = Xa.std(axis=0)
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        A = np.hstack([np.ones((Xa.shape[0], 1)), (Xa - mean) / std])
        penalty = np.full(A.shape[1], l2)
        penalty[0] = 0.0

        def objective(beta: FloatArray) -> float:
            eta = A @ beta
            # log(1 + e^eta) - y eta, stably
            return float(np.sum(np.logaddexp(0.0, eta) - ya * eta) + 0.5 * beta @ (penalty * beta))

        beta = np.zeros(A.shape[1])
        f = objective(beta)
        converged = False
        iterations = 0
        while iterations < max_iter:
            iterations += 1
            p = _sigmoid(A @ beta)
            grad = A.T @ (p - ya) + penalty * beta
            H = (A * (p * (1.0 - p))[:, None]).T @ A + np.diag(penalty + 1e-12)
            step = np.linalg.solve(H, grad)
            t = 1.0
            while True:
                candidate = beta - t * step
                f_new = objective(candidate)
                if f_new <= f or t < 1e-8:
                    break
                t *= 0.5
            beta, f_old, f = candidate, f, f_new
            if abs(f_old - f) <= tol * max(1.0, abs(f)):
                converged = True
                break
        return cls(mean, std, beta, iterations, converged)

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        Xa = np.asarray(X, dtype=np.float64)
        return _sigmoid(self.coef[0] + ((Xa - self.mean) / self.std) @ self.coef[1:])


@dataclass(frozen=True)
class MomentumRule:
    """Direction orientation * sign(logret_1), the orientation (+1 momentum, -1 reversal)
    fitted on the training fold; probability P(up | sign of logret_1) from that fold."""

    p_up_after_up: float
    p_up_after_down: float
    prior: float
    orientation: int = 1

    @classmethod
    def fit(cls, logret_1: ArrayLike, y: ArrayLike) -> MomentumRule:
        r = np.asarray(logret_1, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)

        def rate(mask: NDArray[np.bool_]) -> float:
            return float((ya[mask].sum() + 1.0) / (mask.sum() + 2.0))  # Laplace

        up, down = rate(r > 0), rate(r < 0)
        return cls(up, down, rate(np.ones_like(r, dtype=bool)), 1 if up >= down else -1)

    @property
    def name(self) -> str:
        return "momentum" if self.orientation > 0 else "reversal"

    def direction(self, logret_1: ArrayLike) -> FloatArray:
        """+1 / -1 / 0 (no call on an unchanged close), in the fitted orientation."""
        return self.orientation * np.sign(np.asarray(logret_1, dtype=np.float64))

    def predict_proba(self, logret_1: ArrayLike) -> FloatArray:
        s = np.sign(np.asarray(logret_1, dtype=np.float64))
        return np.where(
            s > 0, self.p_up_after_up, np.where(s < 0, self.p_up_after_down, self.prior)
        )


@dataclass(frozen=True)
class PriorRule:
    """Everyone gets the training up rate: AUC 0.5, hit rate = the majority class share."""

    prior: float

    @classmethod
    def fit(cls, y: ArrayLike) -> PriorRule:
        return cls(float(np.mean(np.asarray(y, dtype=np.float64))))

    def predict_proba(self, n: int) -> FloatArray:
        return np.full(n, self.prior)


@dataclass(frozen=True)
class EuclideanKNN:
    """Equal-vote k nearest neighbours by L2 on features standardised on the training fold.

    Exact search (brute force in blocks): the ablation must not inherit ANN error.
    Constant training columns are dropped, as the analog model drops them. With training
    times and an exclusion window, the vote is shrunk toward the base rate exactly as the
    analog model's is (empirical-Bayes prior strength from leave-out votes), so the
    comparison isolates the geometry, not the calibration.
    """

    mean: FloatArray
    std: FloatArray
    keep: NDArray[np.bool_]
    Z: FloatArray
    y: FloatArray
    k: int
    base_rate: float | None = None
    prior_strength: float | None = None

    @classmethod
    def fit(
        cls,
        X: ArrayLike,
        y: ArrayLike,
        k: int,
        *,
        times: ArrayLike | None = None,
        exclude_bars: int | None = None,
        max_queries: int = 4000,
        seed: int = 0,
    ) -> EuclideanKNN:
        Xa = np.asarray(X, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        mean, std = Xa.mean(axis=0), Xa.std(axis=0)
        keep = std > 1e-9 * np.maximum(1.0, np.abs(mean))
        Z = (Xa[:, keep] - mean[keep]) / std[keep]
        knn = cls(mean, std, keep, Z, ya, min(k, Xa.shape[0]))
        if times is None or exclude_bars is None or not 0 < ya.mean() < 1:
            return knn
        t = np.asarray(times, dtype=np.int64)
        rng = np.random.default_rng(seed)
        n = Xa.shape[0]
        rows = np.sort(rng.choice(n, max_queries, replace=False)) if n > max_queries else None
        rows = np.arange(n) if rows is None else rows
        sq = np.sum(Z * Z, axis=1)
        votes = np.empty(rows.shape[0])
        for a in range(0, rows.shape[0], 512):
            r = rows[a : a + 512]
            d = sq[None, :] - 2.0 * Z[r] @ Z.T
            d[np.abs(t[r][:, None] - t[None, :]) <= exclude_bars] = np.inf
            nn = np.argpartition(d, knn.k - 1, axis=1)[:, : knn.k]
            votes[a : a + 512] = ya[nn].mean(axis=1)
        p0 = float(ya.mean())
        m = fit_prior_strength(votes, np.full(votes.shape[0], float(knn.k)), p0)
        return cls(mean, std, keep, Z, ya, knn.k, p0, m)

    def predict_proba(self, X: ArrayLike, block: int = 512) -> FloatArray:
        Q = (np.asarray(X, dtype=np.float64)[:, self.keep] - self.mean[self.keep]) / self.std[
            self.keep
        ]
        out = np.empty(Q.shape[0])
        sq = np.sum(self.Z * self.Z, axis=1)
        for a in range(0, Q.shape[0], block):
            q = Q[a : a + block]
            d = sq[None, :] - 2.0 * q @ self.Z.T
            nn = np.argpartition(d, self.k - 1, axis=1)[:, : self.k]
            out[a : a + block] = self.y[nn].mean(axis=1)
        if self.base_rate is not None and self.prior_strength is not None:
            out = shrink_to_base_rate(out, float(self.k), self.base_rate, self.prior_strength)
        return out
