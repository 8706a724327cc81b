"""`geodesic train | evaluate | verify | certify`: the offline model lifecycle from the shell.

Options left unset fall back to ``--quick`` presets (small and fast, for tests and smoke
runs) when given, else to the config defaults, so the config classes stay the single
source of default values.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from geodesic.contracts.model_registry import DEFAULT_MODEL_REGISTRY

log = logging.getLogger(__name__)

QUICK_DATA: dict[str, Any] = {"max_bars": 700}
QUICK_TRAIN: dict[str, Any] = {"folds": 3, "k": 16, "ef_construction": 100}
QUICK_CERTIFY: dict[str, Any] = {
    "ef_grid": (16, 64),
    "k_cand_multiples": (1, 4),
    "queries": 50,
    "recall_queries": 200,
    "warmup": 5,
    "rounds": 2,
}

_DATA_OPTS = (
    "cutoff",
    "max_bars",
    "synthetic_bars",
    "horizon",
    "cost_bp",
    "band_policy",
    "spread_model",
    "bar_offset",
)
_TRAIN_OPTS = (
    "folds",
    "embargo",
    "k",
    "k_cand",
    "period",
    "periodic_length_scale",
    "rbf_length_scale",
    "ef_search",
    "ef_construction",
    "seed",
)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--datasets",
        help="comma-separated sources: data sets (sp500, nasdaq; intraday es_1min, es_5min), "
        "synthetic[:SEED], recorded:FILE.npz[:SYMBOL] (from `geodesic record`); "
        "default sp500,nasdaq",
    )
    g.add_argument("--cutoff", help="first date NOT used for training (ISO; 'none' = all)")
    g.add_argument("--max-bars", type=int, help="keep the last N bars before the cutoff")
    g.add_argument("--synthetic-bars", type=int, help="bars per synthetic series")
    g.add_argument("--horizon", type=int, help="label horizon in bars")
    g.add_argument("--cost-bp", type=float, help="cost band in bp")
    g.add_argument(
        "--band-policy",
        choices=("drop", "down"),
        help="samples inside the cost band: drop them (default) or label them down",
    )
    g.add_argument(
        "--spread-model",
        choices=("replay", "constant"),
        help="per-bar spread: drawn from the replay tick model (default) or constant",
    )
    g.add_argument("--bar-offset", type=int, help="added to bar positions (live bar index)")
    m = p.add_argument_group("model and cross-validation")
    m.add_argument("--folds", type=int, help="purged K-fold folds (default 5)")
    m.add_argument("--embargo", type=int, help="bars embargoed after each test block")
    m.add_argument("--k", type=int, help="neighbours kept after the re-rank")
    m.add_argument(
        "--k-cand", type=int, help="HNSW candidates (default K on lorentz_mips, 4 K on l2)"
    )
    m.add_argument("--period", type=float, help="periodic kernel season in bars")
    m.add_argument(
        "--periodic-length-scale", type=float, help="periodic kernel length scale (default 1)"
    )
    m.add_argument(
        "--rbf-length-scale", type=float, help="RBF kernel length scale on d_L (default 1)"
    )
    m.add_argument("--ef-search", type=int, help="HNSW ef at query time (default 64)")
    m.add_argument("--ef-construction", type=int, help="HNSW ef at build time (default 200)")
    m.add_argument("--seed", type=int, help="HNSW build seed")
    m.add_argument("--quick", action="store_true", help="small, fast run (tests, smoke)")
    m.add_argument("--gates-config", type=Path, help="JSON file of GateThresholds")
    m.add_argument("--reports-root", type=Path, default=None, help="default: reports")


def _train_config(args: argparse.Namespace) -> Any:
    from geodesic.lifecycle.config import DatasetConfig, TrainConfig

    data: dict[str, Any] = dict(QUICK_DATA) if args.quick else {}
    train: dict[str, Any] = dict(QUICK_TRAIN) if args.quick else {}
    if args.datasets:
        data["datasets"] = tuple(s.strip() for s in args.datasets.split(",") if s.strip())
    for name in _DATA_OPTS:
        value = getattr(args, name)
        if value is not None:
            data[name] = None if name == "cutoff" and value.lower() == "none" else value
    for name in _TRAIN_OPTS:
        value = getattr(args, name)
        if value is not None:
            train[name] = value
    data_cfg = DatasetConfig(**data)
    if "embargo" not in train:  # the default embargo must still cover a longer horizon
        train["embargo"] = max(TrainConfig.model_fields["embargo"].default, data_cfg.horizon)
    return TrainConfig(data=data_cfg, **train)


def _thresholds(path: Path | None) -> Any:
    from geodesic.lifecycle.config import GateThresholds

    if path is None:
        return GateThresholds()
    return GateThresholds.model_validate(json.loads(path.read_text()))


def _certify_config(args: argparse.Namespace, quick: bool) -> Any:
    from geodesic.lifecycle.config import CertifyConfig

    values: dict[str, Any] = dict(QUICK_CERTIFY) if quick else {}
    for name in ("ef_grid", "k_cand_multiples", "target_recall", "latency_budget_ms", "queries"):
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    return CertifyConfig(**values)


def _add_certify_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("certification")
    g.add_argument("--ef-grid", type=_ints, help="ef_search values, e.g. 16,32,64,128")
    g.add_argument("--k-cand-multiples", type=_ints, help="K_cand as multiples of K, e.g. 1,2,4")
    g.add_argument(
        "--target-recall", type=float, help="recall@K the chosen point must reach (default 0.95)"
    )
    g.add_argument("--latency-budget-ms", type=float, help="p99 budget per event (default 1)")
    g.add_argument("--queries", type=int, help="queries timed per grid point")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="evaluate (purged K-fold), fit, certify, sign and register a model",
        description="With no options: sp500 + nasdaq before 2013, 5 purged folds.",
    )
    _add_data_options(p)
    _add_certify_options(p)
    p.add_argument("--model-id", help="registry id (default: analog-<UTC time>-<config digest>)")
    p.add_argument(
        "--registry-root", type=Path, default=None, help=f"default: {DEFAULT_MODEL_REGISTRY}"
    )
    p.add_argument("--no-certify", action="store_true", help="skip the ef/K_cand sweep")
    p.add_argument("--require-gates", action="store_true", help="exit 1 when a gate fails")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="purged K-fold evaluation only (nothing registered)")
    _add_data_options(p)
    p.add_argument("--run-id", help="report directory name (default: eval-<UTC time>-<digest>)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("verify", help="check a model directory's signature and checksums")
    p.add_argument("model_dir", type=Path, help="the model directory (registry/<model_id>)")
    p.add_argument(
        "--schema-hash", help="expected feature schema_hash (default: this build's features)"
    )
    p.add_argument("--any-schema", action="store_true", help="skip the schema_hash check")
    p.set_defaults(func=_verify)

    p = sub.add_parser("certify", help="sweep ef_search x K_cand: recall, latency, Pareto")
    p.add_argument("model_dir", type=Path, help="the model directory (registry/<model_id>)")
    _add_certify_options(p)
    p.add_argument("--quick", action="store_true", help="a small grid (tests, smoke)")
    p.add_argument("--reports-root", type=Path, default=None, help="default: reports")
    p.add_argument(
        "--apply",
        action="store_true",
        help="write the chosen point into the model and re-sign it (before promotion only)",
    )
    p.set_defaults(func=_certify)


def _roots(args: argparse.Namespace) -> tuple[Path, Path]:
    from geodesic.lifecycle.config import DEFAULT_REPORTS_ROOT

    registry = getattr(args, "registry_root", None) or DEFAULT_MODEL_REGISTRY
    return registry, args.reports_root or DEFAULT_REPORTS_ROOT


def _summary_json(result: Any) -> str:
    o = result.report.overall
    return json.dumps(
        {
            "model_id": result.model_id,
            "model_dir": str(result.model_dir) if result.model_dir else None,
            "report": str(result.report_paths[0]),
            "auc": o.model.auc,
            "baseline_auc": {k: v.auc for k, v in o.baselines.items()},
            "ann_accuracy": o.ann.pipeline_recall_vs_exact_lorentz,
            "gates": [g.as_dict() for g in result.gates],
            "seconds": result.seconds,
        },
        indent=2,
    )


def _train(args: argparse.Namespace) -> int:
    from geodesic.lifecycle.training import describe, train

    try:
        cfg = _train_config(args)
        thresholds = _thresholds(args.gates_config)
        ccfg = _certify_config(args, args.quick)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"geodesic train: invalid configuration: {exc}", file=sys.stderr)
        return 2
    from lorentzcore.validation import FoldReuseError

    registry, reports = _roots(args)
    try:
        result = train(
            cfg,
            model_id=args.model_id,
            registry_root=registry,
            reports_root=reports,
            thresholds=thresholds,
            certify=ccfg,
            run_certify=not args.no_certify,
        )
    except (FileExistsError, FoldReuseError) as exc:
        print(f"geodesic train: {exc} (choose another --model-id)", file=sys.stderr)
        return 2
    print(_summary_json(result) if args.json else describe(result))
    if args.require_gates and not all(g.passed for g in result.gates):
        return 1
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from geodesic.lifecycle.training import describe, evaluate

    try:
        cfg = _train_config(args)
        thresholds = _thresholds(args.gates_config)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"geodesic evaluate: invalid configuration: {exc}", file=sys.stderr)
        return 2
    from lorentzcore.validation import FoldReuseError

    _, reports = _roots(args)
    try:
        result = evaluate(cfg, run_id=args.run_id, reports_root=reports, thresholds=thresholds)
    except FoldReuseError as exc:
        print(f"geodesic evaluate: {exc} (choose another --run-id)", file=sys.stderr)
        return 2
    print(_summary_json(result) if args.json else describe(result))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from geodesic.features.compute import SCHEMA_HASH
    from geodesic.lifecycle.registry import ModelVerificationError, load_verified

    expected = None if args.any_schema else (args.schema_hash or SCHEMA_HASH)
    try:
        model = load_verified(args.model_dir, expected)
    except (ModelVerificationError, ValueError, OSError, RuntimeError) as exc:
        print(f"REFUSED {args.model_dir}: {exc}", file=sys.stderr)
        return 1
    spec = model.spec
    print(
        f"OK {spec.model_id}: signature and sha256 of every file verified; schema_hash "
        f"{spec.schema_hash}; {spec.n_train} training vectors"
    )
    return 0


def _certify(args: argparse.Namespace) -> int:
    from geodesic.features.compute import WARMUP_BARS
    from geodesic.lifecycle.certify import (
        apply_operating_point,
        certify_model,
        certify_queries,
        render_certify_markdown,
        write_certify,
    )
    from geodesic.lifecycle.config import DatasetConfig
    from geodesic.lifecycle.registry import (
        ModelVerificationError,
        dev_key_path_for_model,
        load_manifest,
        load_verified,
    )
    from geodesic.lifecycle.signing import resolve_signing_key

    try:
        model = load_verified(args.model_dir)
        manifest = load_manifest(args.model_dir)
        ccfg = _certify_config(args, args.quick)
    except (ModelVerificationError, ValidationError, ValueError, OSError) as exc:
        print(f"geodesic certify: {exc}", file=sys.stderr)
        return 1
    data = DatasetConfig.model_validate(manifest["parameters"]["train"]["data"])
    X, T, source = certify_queries(data, WARMUP_BARS)
    result = certify_model(model, X, T, ccfg, query_source=source)
    _, reports = _roots(args)
    js, md = write_certify(result, reports / model.spec.model_id)
    print(render_certify_markdown(result))
    print(f"saved {js} and {md}")
    if args.apply and result.chosen is not None:
        key = resolve_signing_key(dev_key_path_for_model(args.model_dir))
        apply_operating_point(args.model_dir, result, key)
        print(
            f"applied ef_search={result.chosen.ef_search} k_cand={result.chosen.k_cand} "
            f"to {args.model_dir} and re-signed"
        )
    return 0 if result.chosen is not None else 1
