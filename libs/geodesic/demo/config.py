"""Demo settings (env prefix DEMO_, e.g. DEMO_FAST=1, DEMO_RATE=1500)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", frozen=True, extra="ignore")

    fast: bool = Field(default=False, description="short variant for CI (< 3 minutes)")
    #: Replay pace in ticks per second (the embedded broker saturates a core near 1000).
    rate: Annotated[float, Field(gt=0)] = 500.0
    #: Training uses bars before this day; the replay starts here (later history).
    cutoff: str = "2007-01-01"
    #: Last replayed day (full demo: the rest of the history; fast: a few months).
    replay_end: str | None = None
    ticks_per_bar: tuple[int, int] = (8, 12)
    dup_rate: Annotated[float, Field(ge=0, le=0.5)] = 0.01
    malformed_rate: Annotated[float, Field(ge=0, le=0.5)] = 0.01
    canary_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: int = 7
    out_dir: Path = Path("reports/demo")
    run_root: Path = Path("run/demo")
    live: bool = Field(
        default_factory=lambda: sys.stdout.isatty(),
        description="live terminal display (off when output is not a terminal, e.g. CI)",
    )

    @property
    def end(self) -> str:
        if self.replay_end:
            return self.replay_end
        return "2007-10-01" if self.fast else "2018-12-31"
