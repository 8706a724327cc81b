"""Every registered model carries a model card: signed with it, and next to its report."""

from __future__ import annotations

import re

from lifecycle_helpers import TEST_KEY

from geodesic.features.compute import SCHEMA_HASH
from geodesic.lifecycle.model_card import MODEL_CARD
from geodesic.lifecycle.registry import verify_model_dir
from geodesic.lifecycle.training import TrainResult


def _sections(card: str) -> list[str]:
    return re.findall(r"^## (.+)$", card, flags=re.M)


def test_registered_model_has_a_signed_card_identical_to_the_report_copy(trained: TrainResult):
    assert trained.model_dir is not None
    manifest = verify_model_dir(trained.model_dir, SCHEMA_HASH, key=TEST_KEY)
    assert MODEL_CARD in manifest["files"] and manifest["model_card"] == MODEL_CARD
    card = (trained.model_dir / MODEL_CARD).read_text()
    assert (trained.report_paths[0].parent / MODEL_CARD).read_text() == card
    assert _sections(card) == [
        "Data and period",
        "Features",
        "Parameters",
        "Offline figures",
        "Gates",
        "Known limits",
    ]


def test_card_shows_the_offline_figures_with_their_uncertainty(trained: TrainResult):
    card = (trained.model_dir / MODEL_CARD).read_text()
    report = trained.report
    assert report.cv is not None
    analog = report.cv.forecasters["analog"]
    row = next(ln for ln in card.splitlines() if ln.startswith("| **analog** |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{analog.auc_mean:.4f}"  # mean AUC
    assert cells[2] == ", ".join(f"{a:.3f}" for a in analog.group_aucs)  # per fold
    assert cells[3] == f"{analog.null_p:.3f}"  # permutation p-value
    assert cells[4] == f"{analog.brier_skill:.4f}"
    assert "Walk-forward holdout" in card if report.holdout else "holdout none" in card
    assert f"± {report.overall.model.auc_se:.4f}" in card  # the pooled AUC's standard error


def test_card_lists_every_gate_with_its_outcome_and_derives_the_limits(trained: TrainResult):
    card = (trained.model_dir / MODEL_CARD).read_text()
    for g in trained.report.gates:
        line = next(ln for ln in card.splitlines() if ln.startswith(f"| {g.name} |"))
        assert line.rstrip(" |").endswith("pass" if g.passed else "**FAIL**")
    failed = [g for g in trained.report.gates if not g.passed]
    limits = card.split("## Known limits", 1)[1]
    if failed:
        assert f"{len(failed)} of {len(trained.report.gates)} offline gates failed" in limits
    d = trained.report.dataset
    assert f"from {d.first_date} to {d.last_date}" in limits
