"""A fitted analog model: whitener, ANN index + vector store, labels and bar times.

On disk (one directory, JSON and .npy/.npz only, no pickle):

    model.json      spec: id, feature names, schema hash, kernel and scorer parameters
    whitener.npz    Tyler location and Cholesky factor
    labels.npy      float32 label per training vector (1 = up, 0 = down; [0, 1] allowed)
    times.npy       int64 bar index per training vector (tau for the periodic kernel)
    ann/            index.bin, vectors.npy (memory-mapped store), ann_meta.json

Signing and registry checks live above this layer (geodesic.registry); this module checks
shapes and versions so a mismatched artifact fails with the file's name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from lorentzcore.ann import AnnIndex
from lorentzcore.hyperbolic import lorentz_distances_to_query
from lorentzcore.kernels import KernelConfig, fit_prior_strength, kernel_weights, weighted_prob
from lorentzcore.model_id import MODEL_ID_PATTERN, is_model_id
from lorentzcore.whitening import Whitener

MODEL_FORMAT_VERSION = 1
SPEC_FILE = "model.json"
WHITENER_FILE = "whitener.npz"
LABELS_FILE = "labels.npy"
TIMES_FILE = "times.npy"
ANN_DIR = "ann"


def _model_id(text: str) -> str:
    if not is_model_id(text):
        raise ValueError(f"model id {text!r} must match {MODEL_ID_PATTERN} and not be . or ..")
    return text


ModelId = Annotated[str, AfterValidator(_model_id)]


class ModelArtifactError(ValueError):
    """A model directory that cannot be used; the message names the file and the problem."""


class ScorerParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    k: Annotated[int, Field(ge=1)] = 32
    k_cand: Annotated[int, Field(ge=1)] = 128
    #: Scale applied to whitened vectors before the lift: sets where on the hyperboloid the
    #: data sits (larger = more hyperbolic). None = fitted: 1 / median |z| of the training
    #: set, which puts typical states at radius 1, where curvature already compresses
    #: extreme states radially but the L2 candidate stage still contains the Lorentz
    #: neighbours (measured by bench/core_scoring.py; see docs/decisions.md).
    lift_scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    long_threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.55
    short_threshold: Annotated[float, Field(ge=0.0, le=0.5)] = 0.45
    budget_ms: Annotated[float, Field(gt=0)] = 1.0
    #: Shrinkage of the vote toward the base rate by effective neighbours
    #: (kernels.shrink_to_base_rate). Both None (models trained before it): the raw vote.
    base_rate: Annotated[float, Field(gt=0, lt=1)] | None = None
    prior_strength: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _k_within_candidates(self) -> ScorerParams:
        if self.k > self.k_cand:
            raise ValueError(f"k ({self.k}) must not exceed k_cand ({self.k_cand})")
        return self


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = MODEL_FORMAT_VERSION
    model_id: ModelId
    feature_names: tuple[str, ...]
    schema_hash: str
    n_train: int
    dim: int
    #: Features the model uses (True) in feature_names order. A feature that is constant
    #: in training carries no information, and whitening it would turn any live variation
    #: into an enormous, meaningless distance; such features are masked out. None = all.
    feature_mask: tuple[bool, ...] | None = None

    @property
    def used_dim(self) -> int:
        return self.dim if self.feature_mask is None else sum(self.feature_mask)

    kernel: KernelConfig = KernelConfig()
    params: ScorerParams = ScorerParams()
    extra: dict[str, Any] = Field(default_factory=dict)


@dataclass
class AnalogModel:
    spec: ModelSpec
    whitener: Whitener
    index: AnnIndex
    labels: NDArray[np.float32]
    times: NDArray[np.int64]
    directory: Path

    @classmethod
    def fit(
        cls,
        X: ArrayLike,
        labels: ArrayLike,
        times: ArrayLike,
        *,
        directory: str | os.PathLike[str],
        model_id: str,
        feature_names: tuple[str, ...],
        schema_hash: str,
        kernel: KernelConfig | None = None,
        params: ScorerParams | None = None,
        shrinkage: float | None = None,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        seed: int = 100,
        extra: dict[str, Any] | None = None,
        shrink_exclude_bars: int | None = None,
        candidate_metric: str = "l2",
    ) -> AnalogModel:
        """Fit the whitener on X only (no test data leaks in), build the index, save all.

        With ``shrink_exclude_bars`` set, the vote's shrinkage toward the training base rate
        is fitted (empirical Bayes) from votes on training points whose neighbours exclude
        every sample within that many bars of them (their own and overlapping labels).
        ``candidate_metric="lorentz_mips"`` builds the HNSW graph over the MIPS-augmented
        lift (lorentzcore.ann), so candidates arrive in Lorentz order.
        """
        X64 = np.asarray(X, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float32)
        t = np.asarray(times, dtype=np.int64)
        if X64.ndim != 2 or len(y) != len(X64) or len(t) != len(X64):
            raise ValueError(f"X {X64.shape}, labels {y.shape}, times {t.shape} do not align")
        if len(feature_names) != X64.shape[1]:
            raise ValueError(f"{len(feature_names)} feature names for {X64.shape[1]} columns")
        if not np.all((y >= 0) & (y <= 1)):
            raise ValueError("labels must lie in [0, 1]")
        params = params or ScorerParams()
        mask = informative_features(X64)
        if not mask.any():
            raise ValueError("every feature is constant in the training data")
        whitener = Whitener.fit(X64[:, mask], shrinkage=shrinkage)
        Z = whitener.transform(X64[:, mask]).astype(np.float32)
        if params.lift_scale is None:
            median_norm = float(np.median(np.linalg.norm(Z.astype(np.float64), axis=1)))
            scale = 1.0 / median_norm if median_norm > 0 else 1.0
            params = params.model_copy(update={"lift_scale": scale})
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        index = AnnIndex.build(
            Z,
            directory=out / ANN_DIR,
            M=M,
            ef_construction=ef_construction,
            ef_search=ef_search,
            k_cand=params.k_cand,
            seed=seed,
            metric=candidate_metric,
            lift_scale=float(params.lift_scale or 1.0),
        )
        spec = ModelSpec(
            model_id=model_id,
            feature_names=tuple(feature_names),
            schema_hash=schema_hash,
            n_train=len(X64),
            dim=X64.shape[1],
            feature_mask=None if mask.all() else tuple(bool(m) for m in mask),
            kernel=kernel or KernelConfig(),
            params=params,
            extra=extra or {},
        )
        model = cls(spec, whitener, index, y, t, out)
        if shrink_exclude_bars is not None:
            base_rate = float(np.mean(y))
            votes, eff = _leave_out_votes(model, Z, t, shrink_exclude_bars, seed)
            strength = fit_prior_strength(votes, eff, base_rate)
            if 0.0 < base_rate < 1.0:
                params = params.model_copy(
                    update={"base_rate": base_rate, "prior_strength": strength}
                )
                model.spec = spec.model_copy(update={"params": params})
        model.save()
        return model

    def with_operating_point(self, ef_search: int, k_cand: int) -> AnalogModel:
        """This model served at (ef_search, k_cand), e.g. from RecallTuner.calibrate.

        Both live in two places that must agree: the index (ann_meta.json; ef_search is
        applied to the shared hnswlib graph at once) and the spec's ScorerParams, whose
        k_cand the Scorer asks for. Validated (k <= k_cand); written by :meth:`save`.
        """
        params = ScorerParams.model_validate({**self.spec.params.model_dump(), "k_cand": k_cand})
        self.index.set_ef(ef_search)
        self.index.set_k_cand(k_cand)
        spec = self.spec.model_copy(update={"params": params})
        return AnalogModel(spec, self.whitener, self.index, self.labels, self.times, self.directory)

    def save(self) -> Path:
        """Write everything but the index's own files into the model directory."""
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        self.whitener.save(d / WHITENER_FILE)
        np.save(d / LABELS_FILE, self.labels, allow_pickle=False)
        np.save(d / TIMES_FILE, self.times, allow_pickle=False)
        self.index.save(d / ANN_DIR)
        (d / SPEC_FILE).write_text(self.spec.model_dump_json(indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> AnalogModel:
        d = Path(directory)
        spec_path = d / SPEC_FILE
        try:
            spec = ModelSpec.model_validate(json.loads(spec_path.read_text()))
        except (OSError, ValueError) as exc:
            raise ModelArtifactError(f"{spec_path}: {exc}") from exc
        if spec.format_version != MODEL_FORMAT_VERSION:
            raise ModelArtifactError(
                f"{spec_path}: format_version {spec.format_version} != {MODEL_FORMAT_VERSION}"
            )
        whitener = Whitener.load(d / WHITENER_FILE)
        labels = _load_array(d / LABELS_FILE, np.float32, spec.n_train)
        times = _load_array(d / TIMES_FILE, np.int64, spec.n_train)
        index = AnnIndex.load(d / ANN_DIR)
        used = spec.used_dim
        if whitener.dim != used or index.dim != used or index.count != spec.n_train:
            raise ModelArtifactError(
                f"{d}: dims disagree (spec {spec.dim}x{spec.n_train}, whitener {whitener.dim}, "
                f"index {index.dim}x{index.count})"
            )
        return cls(spec, whitener, index, labels, times, d)


#: Training points whose leave-out votes fit the prior strength (a seeded subsample).
SHRINK_FIT_QUERIES = 4000


def _leave_out_votes(
    model: AnalogModel,
    Z: NDArray[np.float32],
    times: NDArray[np.int64],
    exclude_bars: int,
    seed: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The scorer's vote (Lorentz re-rank, kernels) for training points, with every
    candidate within ``exclude_bars`` of the query's time removed (itself included)."""
    n = Z.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, SHRINK_FIT_QUERIES, replace=False) if n > SHRINK_FIT_QUERIES else None
    rows = np.arange(n) if idx is None else np.sort(idx)
    params, kernel = model.spec.params, model.spec.kernel
    k_cand = min(params.k_cand + 4 * (2 * exclude_bars + 1), model.index.count)
    cand, _, Zn = model.index.search_with_vectors(Z[rows], k_cand)
    scale = float(params.lift_scale or 1.0)
    labels = model.labels.astype(np.float64)
    votes = np.full(rows.shape[0], np.nan)
    eff = np.zeros(rows.shape[0])
    for j, i in enumerate(rows):
        keep = np.abs(model.times[cand[j]] - times[i]) > exclude_bars
        if not keep.any():
            continue
        ids = cand[j][keep]
        d = lorentz_distances_to_query(Z[i].astype(np.float64) * scale, Zn[j][keep] * scale)
        sel = np.argsort(d, kind="stable")[: params.k]
        w = kernel_weights(d[sel], np.abs(times[i] - model.times[ids[sel]]), kernel)
        p, e, abstain = weighted_prob(w, labels[ids[sel]], kernel.weight_floor)
        if not abstain:
            votes[j], eff[j] = p, e
    return votes, eff


def informative_features(X: NDArray[np.float64], rel_tol: float = 1e-9) -> NDArray[np.bool_]:
    """Columns whose robust spread (MAD) is not negligible next to their level."""
    med = np.median(X, axis=0)
    mad = np.median(np.abs(X - med), axis=0)
    spread = np.where(mad > 0, mad, X.std(axis=0))
    return spread > rel_tol * np.maximum(1.0, np.abs(med))


_Scalar = TypeVar("_Scalar", bound=np.generic)


def _load_array(path: Path, dtype: type[_Scalar], n: int) -> NDArray[_Scalar]:
    try:
        arr: NDArray[_Scalar] = np.load(path, allow_pickle=False)  # dtype checked below
    except (OSError, ValueError) as exc:
        raise ModelArtifactError(f"{path}: unreadable ({exc})") from exc
    if arr.dtype != dtype or arr.shape != (n,):
        raise ModelArtifactError(
            f"{path}: expected {np.dtype(dtype)} ({n},), got {arr.dtype} {arr.shape}"
        )
    return arr
