"""Configuration of the offline lifecycle: what to train on, how, and what a model must pass.

One frozen, validated pydantic class per concern. Every value here is fixed before any
result is seen (no threshold is chosen to make a gate pass); the whole config is stored in
the report and the manifest so a model can be retrained exactly.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geodesic.marketdata.replay import ReplayConfig

_REPLAY = ReplayConfig()

#: The real data sets pooled by default, and the first date kept for replay (2013-2018).
DEFAULT_DATASETS: tuple[str, ...] = ("sp500", "nasdaq")
DEFAULT_CUTOFF = "2013-01-01"
DEFAULT_REPORTS_ROOT = Path("reports")

PosInt = Annotated[int, Field(ge=1)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class DatasetConfig(BaseModel):
    """How bars become (features, label, time) samples; see ``lifecycle.training_data``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Registered data set names (``geodesic.marketdata.datasets``) or ``synthetic[:seed]``.
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    #: Bars dated on or after this day are never read for training (kept for replay).
    cutoff: str | None = DEFAULT_CUTOFF
    #: Use at most this many of the most recent bars before the cutoff, per symbol.
    max_bars: PosInt | None = None
    #: Bars in a synthetic series (``synthetic`` data sets only).
    synthetic_bars: Annotated[int, Field(ge=200)] = 3000
    #: Label horizon h in bars: y from log(close[t+h] / close[t]).
    horizon: PosInt = 1
    #: Round-trip cost in bp; |forward return| <= cost is the "flat" band (the risk
    #: supervisor's MarkoutLabeler uses the same 1 bp default).
    cost_bp: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    #: "drop": band samples are left out of training and of the 0/1 metrics (they stay in
    #: the net win rate, where they count as losses); "down": they are labelled 0.
    band_policy: Literal["drop", "down"] = "drop"
    #: Quoted spread of the replay (ReplayConfig.spread_bp): daily bars have no spread.
    spread_bp: Annotated[float, Field(ge=0, le=500, allow_inf_nan=False)] = _REPLAY.spread_bp
    #: "constant" (default): close * spread_bp / 1e4, what daily bars without quotes
    #: honestly say about the spread: nothing. The column is then constant, carries no
    #: information and the model excludes it (recorded in the manifest), so no random
    #: number enters the distance. "replay": per-bar mean spread drawn from the replay's
    #: tick model (random numbers; used for the drift reference of the live spread).
    spread_model: Literal["replay", "constant"] = "constant"
    #: Ticks per bar of the replay the model will see live (None: ReplayConfig's default);
    #: fewer ticks per bar make the per-bar mean spread noisier, so it must match.
    ticks_per_bar: tuple[PosInt, PosInt] | None = None
    #: Added to every bar position, placing training times in the live bar-index space.
    bar_offset: Annotated[int, Field(ge=0)] = 0
    seed: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if not self.datasets:
            raise ValueError("datasets: at least one data set is needed")
        if len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"datasets: duplicates in {self.datasets}")
        if self.cutoff is not None:
            try:
                date.fromisoformat(self.cutoff)
            except ValueError:
                raise ValueError(f"cutoff: {self.cutoff!r} is not an ISO date") from None
        return self


class TrainConfig(BaseModel):
    """Cross-validation, model and index parameters of one training run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DatasetConfig = DatasetConfig()
    folds: Annotated[int, Field(ge=2, le=20)] = 5
    #: Bars after each test block also removed from training; >= horizon (checked).
    embargo: Annotated[int, Field(ge=0)] = 5
    k: PosInt = 32
    #: Candidates fetched per event before the Lorentz re-rank; None: see `candidate_count`.
    k_cand: PosInt | None = None
    #: Periodic-kernel season in bars: 5 daily bars = one trading week.
    period: PosFloat = 5.0
    periodic_length_scale: PosFloat = 1.0
    rbf_length_scale: PosFloat = 1.0
    weight_floor: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1e-3
    long_threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.55
    short_threshold: Annotated[float, Field(ge=0.0, le=0.5)] = 0.45
    #: HNSW candidate stage: "l2" (L2 on whitened z, then the Lorentz re-rank) or
    #: "lorentz_mips" (exact candidate stage: the graph searches Lorentz distance through
    #: the MIPS-to-L2 augmentation; lorentzcore.ann). Default: on the default data its
    #: pipeline recall@32 vs exact Lorentz is 0.9997 vs 0.9915 for L2 + re-rank (ef 64,
    #: K_cand 128; `geodesic train` reports it, `geodesic certify` compares both).
    candidate_stage: Literal["l2", "lorentz_mips"] = "lorentz_mips"
    M: Annotated[int, Field(ge=2)] = 16
    ef_construction: PosInt = 200
    #: Beam width before certification; `geodesic train` then serves the cheapest
    #: certified point. With K_cand = K = 32, ef 64 holds recall@32 0.97 at 200k x 16
    #: (docs/performance.md).
    ef_search: PosInt = 64
    #: Top fraction of scores for precision@k.
    precision_top_fraction: Annotated[float, Field(gt=0, le=1)] = 0.1
    seed: Annotated[int, Field(ge=0)] = 100
    #: Serve the vote shrunk toward the training base rate by effective neighbours, the
    #: prior strength fitted by empirical Bayes on each training set (lorentzcore.kernels).
    shrink_to_base_rate: bool = True
    #: Date-block shuffles of the permutation null and paired-bootstrap resamples.
    n_permutations: Annotated[int, Field(ge=19)] = 200
    n_bootstrap: Annotated[int, Field(ge=19)] = 200
    #: Bars per block of the permutation null / bootstrap (keeps label autocorrelation).
    block_bars: PosInt = 20
    #: One-sided quantile of the bootstrap lift read by the gates (0.05: a 95% bound).
    bound_quantile: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    #: Walk-forward step over the holdout (bars after the cutoff): retrain on all the
    #: past, score the next step. 252 = yearly on daily bars.
    holdout_step_bars: PosInt = 252
    #: Score the data on/after the cutoff walk-forward (needs a cutoff and data after it).
    walk_forward_holdout: bool = True
    #: Round-trip costs (bp) of the cost-sensitivity table.
    cost_grid_bp: tuple[Annotated[float, Field(ge=0)], ...] = (0.0, 1.0, 2.0, 5.0, 10.0)
    #: Configurations tried before this one (other runs); the deflated Sharpe ratio adds
    #: the forecasters evaluated in this run.
    prior_trials: Annotated[int, Field(ge=0)] = 0
    reliability_bins: Annotated[int, Field(ge=2)] = 10

    @property
    def candidate_count(self) -> int:
        """K_cand served: ``k_cand``, or by default K for the lorentz_mips stage (its graph
        already ranks by Lorentz distance, so candidates beyond K add no recall that the
        beam width does not; the re-rank only orders them in float64) and 4 K for l2 (the
        L2 order is not the Lorentz order; K_cand 128 for K 32 held recall@32 0.985)."""
        if self.k_cand is not None:
            return self.k_cand
        return self.k if self.candidate_stage == "lorentz_mips" else 4 * self.k

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.embargo < self.data.horizon:
            raise ValueError(
                f"embargo: {self.embargo} bars is shorter than the label horizon "
                f"({self.data.horizon}); serially dependent labels would leak"
            )
        if self.k > self.candidate_count:
            raise ValueError(f"k: {self.k} exceeds k_cand {self.k_cand}")
        return self


class CertifyConfig(BaseModel):
    """The (ef_search, K_cand) grid and the targets of ``geodesic certify``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Fine steps where the choice usually falls (the chosen beam is paid on every event).
    ef_grid: tuple[PosInt, ...] = (16, 32, 48, 64, 80, 96, 128, 256)
    #: Candidate counts as multiples of K (1 = no re-rank headroom).
    k_cand_multiples: tuple[PosInt, ...] = (1, 2, 4, 8)
    target_recall: Annotated[float, Field(gt=0, le=1)] = 0.95
    latency_budget_ms: PosFloat = 1.0
    #: Queries timed per grid point (single-event scoring, so latency is per event).
    queries: Annotated[int, Field(ge=10)] = 300
    #: Queries whose top-K is compared with exact search (batch; cheap).
    recall_queries: Annotated[int, Field(ge=10)] = 1000
    warmup: Annotated[int, Field(ge=0)] = 30
    #: Latency is timed in this many interleaved rounds over the grid.
    rounds: Annotated[int, Field(ge=1)] = 5
    seed: Annotated[int, Field(ge=0)] = 0


class GateThresholds(BaseModel):
    """Limits of the offline gates (``lifecycle.gates.offline_gates``); None disables one.

    They read the honest sections of the report (per-fold CV and the walk-forward holdout),
    never the pooled figures: a model must beat the permutation null and every baseline
    with its confidence bound, in CV and on the holdout.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Per-fold mean AUC must exceed this (CV and holdout).
    min_auc: Annotated[float, Field(ge=0, le=1)] | None = 0.5
    #: The date-block permutation p-value of the mean AUC must be below this.
    max_null_p: Annotated[float, Field(gt=0, le=1)] | None = 0.05
    #: Lower bootstrap bound of the mean-AUC lift over each baseline must exceed this.
    min_lift_lower_bound: Annotated[float, Field(ge=-1, le=1)] | None = 0.0
    #: Brier skill against the prior must exceed this (probabilities beat the base rate).
    min_brier_skill: Annotated[float, Field(ge=-1, le=1)] | None = 0.0
    #: Quantile-bin ECE must be below this.
    max_ece: Annotated[float, Field(ge=0, le=1)] | None = 0.05
    #: Pipeline top-K recall against exact Lorentz k-NN (the brief's >= 0.90).
    min_ann_accuracy: Annotated[float, Field(ge=0, le=1)] | None = 0.90
    #: Share of events the model abstains on.
    max_abstain_rate: Annotated[float, Field(ge=0, le=1)] | None = 0.5
    #: The worst fold's AUC; catches a model that only works in one period.
    min_fold_auc: Annotated[float, Field(ge=0, le=1)] | None = None
    #: Without a holdout (no cutoff, or no data after it) the holdout gates fail.
    require_holdout: bool = True
