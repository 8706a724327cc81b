"""Drift reference of a model: its training distribution per feature, shipped with the model.

``drift_reference.json`` holds, for every feature and for the whitened radius |z| (one
number that moves when the joint distribution moves):

* ``cuts`` + ``proportions``: decile bins of the training data (interior edges; the outer
  bins reach to -inf / +inf, as in ``lorentzcore.metrics``) for PSI;
* ``quantiles`` at levels i / ``ks_grid`` (i = 0..ks_grid): a fine grid for KS. Used as a
  pseudo-sample it reproduces the reference CDF to within 1 / ks_grid;
* mean, std, min, max, n for display;
* ``lookback_bars``: the bars each value is built from (features.compute.feature_lookbacks);
  n consecutive live values hold ~n / lookback independent observations.

JSON only (floats round-trip exactly); :class:`DriftReference` turns an entry back into the
streaming ``IncrementalPSI`` / ``IncrementalKS`` the risk supervisor runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from geodesic.features.compute import DEFAULT_PARAMS, feature_lookbacks
from lorentzcore.constants import KS_GRID_BINS, PSI_DEFAULT_BINS
from lorentzcore.metrics import IncrementalKS, IncrementalPSI, quantile_edges

__all__ = ["DRIFT_FILE", "RADIUS_KEY", "DriftReference", "drift_reference"]

DRIFT_FILE = "drift_reference.json"
DRIFT_FORMAT = "geodesic.drift_reference/1"
RADIUS_KEY = "__whitened_radius__"


def _entry(values: np.ndarray, bins: int, ks_grid: int) -> dict[str, Any]:
    edges = quantile_edges(values, bins)
    cuts = edges[1:-1]
    counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=cuts.size + 1)
    return {
        "n": int(values.size),
        "cuts": cuts.tolist(),
        "proportions": (counts / values.size).tolist(),
        "quantiles": np.quantile(values, np.arange(ks_grid + 1) / ks_grid).tolist(),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def drift_reference(
    X: ArrayLike,
    feature_names: tuple[str, ...],
    *,
    whitened_radius: ArrayLike | None = None,
    bins: int = PSI_DEFAULT_BINS,
    ks_grid: int = KS_GRID_BINS,
) -> dict[str, Any]:
    """The JSON document for the training matrix X (n, d) (and optionally |z| per row)."""
    Xa = np.asarray(X, dtype=np.float64)
    if Xa.ndim != 2 or Xa.shape[1] != len(feature_names) or Xa.shape[0] == 0:
        raise ValueError(f"X {Xa.shape} does not match {len(feature_names)} feature names")
    if not np.isfinite(Xa).all():
        raise ValueError("X must be finite")
    features = {name: _entry(Xa[:, j], bins, ks_grid) for j, name in enumerate(feature_names)}
    lookbacks = feature_lookbacks(DEFAULT_PARAMS)
    for name, entry in features.items():
        entry["lookback_bars"] = int(lookbacks.get(name, 1))
    if whitened_radius is not None:
        features[RADIUS_KEY] = _entry(np.asarray(whitened_radius, dtype=np.float64), bins, ks_grid)
    return {
        "format": DRIFT_FORMAT,
        "psi_bins": bins,
        "ks_grid": ks_grid,
        "feature_names": list(feature_names),
        "features": features,
    }


@dataclass(frozen=True)
class DriftReference:
    """A loaded drift_reference.json."""

    doc: dict[str, Any]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DriftReference:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != DRIFT_FORMAT:
            raise ValueError(f"{path}: format {doc.get('format')!r}, expected {DRIFT_FORMAT}")
        return cls(doc)

    @property
    def names(self) -> list[str]:
        """Feature names in model order, then the whitened radius."""
        ordered = list(self.doc["feature_names"])
        return ordered + [k for k in self.doc["features"] if k not in ordered]

    def edges(self, name: str) -> np.ndarray:
        cuts = np.asarray(self.doc["features"][name]["cuts"], dtype=np.float64)
        return np.concatenate([[-np.inf], cuts, [np.inf]])

    def incremental_psi(self, name: str, *, window: int | None = None) -> IncrementalPSI:
        entry = self.doc["features"][name]
        return IncrementalPSI(self.edges(name), entry["proportions"], window=window)

    def incremental_ks(self, name: str, *, window: int | None = None) -> IncrementalKS:
        """KS against the quantile grid as a pseudo-sample (CDF error <= 1 / ks_grid)."""
        grid = np.asarray(self.doc["features"][name]["quantiles"], dtype=np.float64)
        return IncrementalKS(grid, grid_bins=self.doc["ks_grid"], window=window)
