import json
import shutil

import pytest

from geodesic.cli.main import main
from geodesic.lifecycle.registry import load_manifest

KEY = "c" * 40


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("GEODESIC_MODEL_SIGNING_KEY", KEY)
    return tmp_path / "models" / "registry", tmp_path / "reports"


def test_train_quick_on_real_data_then_verify_certify_and_refuse_tampering(roots, capsys):
    registry, reports = roots
    args = ["--registry-root", str(registry), "--reports-root", str(reports)]
    quick = ["train", "--quick", "--latency-budget-ms", "100"]
    assert main([*quick, "--model-id", "cli-q", "--json", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    model_dir = registry / "cli-q"
    assert out["model_id"] == "cli-q" and out["model_dir"] == str(model_dir)
    assert {g["name"] for g in out["gates"]} >= {
        "ann_accuracy",
        "cv_lift_lower_vs_logistic",
        "cv_ece",
    }
    for name in ("offline_report.json", "offline_report.md", "certify.json", "certify.md"):
        assert (reports / "cli-q" / name).is_file()
    manifest = load_manifest(model_dir)
    assert manifest["parameters"]["train"]["data"]["datasets"] == ["sp500", "nasdaq"]
    assert manifest["training"]["dataset"]["last_date"] < "2013-01-01"
    assert not (registry.parent / ".signing-key").exists()  # the env key was used

    assert main(["verify", str(model_dir)]) == 0
    assert "OK cli-q" in capsys.readouterr().out

    certify = ["certify", str(model_dir), "--quick", "--latency-budget-ms", "100"]
    assert main([*certify, "--reports-root", str(reports)]) == 0
    table = capsys.readouterr().out
    assert "| ef_search | K_cand | pipeline recall" in table and "<==" in table

    assert main(["train", "--quick", "--model-id", "cli-q", *args]) == 2  # ids are unique
    capsys.readouterr()

    bad = registry / "cli-bad"
    shutil.copytree(model_dir, bad)
    with (bad / "labels.npy").open("r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0x01]))
    assert main(["verify", str(bad)]) == 1
    assert "labels.npy" in capsys.readouterr().err

    assert main(["verify", str(model_dir), "--schema-hash", "ffffffffffffffff"]) == 1
    assert "schema_hash" in capsys.readouterr().err


def test_evaluate_writes_a_report_and_registers_nothing(roots, capsys):
    registry, reports = roots
    rc = main(
        [
            "evaluate",
            "--datasets",
            "synthetic:5",
            "--cutoff",
            "none",
            "--synthetic-bars",
            "500",
            "--quick",
            "--run-id",
            "ev1",
            "--reports-root",
            str(reports),
        ]
    )
    assert rc == 0
    assert "ANN accuracy" in capsys.readouterr().out
    assert (reports / "ev1" / "offline_report.json").is_file()
    assert not registry.exists()


def test_invalid_options_exit_2_with_the_field_named(roots, capsys):
    _, reports = roots
    rc = main(
        ["train", "--quick", "--horizon", "9", "--embargo", "3", "--reports-root", str(reports)]
    )
    assert rc == 2
    assert "embargo" in capsys.readouterr().err
