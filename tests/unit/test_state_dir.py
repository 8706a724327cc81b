"""The state directory does not depend on the working directory (`geodesic down` from
anywhere finds the stack `geodesic up` started)."""

from pathlib import Path

import pytest

from geodesic.stack.home import default_run_root


def test_state_dir_is_xdg_state_home_or_its_default_and_env_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GEODESIC_RUN_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert default_run_root() == tmp_path / "home" / ".local" / "state" / "geodesic"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the spec: absolute only
    assert default_run_root() == tmp_path / "home" / ".local" / "state" / "geodesic"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_run_root() == tmp_path / "xdg" / "geodesic"
    monkeypatch.setenv("GEODESIC_RUN_DIR", str(tmp_path / "run"))
    assert default_run_root() == tmp_path / "run"
