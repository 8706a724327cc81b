"""Stage bookkeeping for the demo: each stage is timed and recorded for the report, and a
failure names the stage and the log to read."""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Iterator
from typing import Any

from rich.console import Console

__all__ = ["StageFailedError", "Stages"]

log = logging.getLogger(__name__)


class StageFailedError(RuntimeError):
    def __init__(self, stage: str, detail: str, log_hint: str) -> None:
        super().__init__(f"stage '{stage}' failed: {detail} (see {log_hint})")
        self.stage = stage


class Stages:
    """Runs and records the stages (the report lists them); a failure names the stage."""

    def __init__(self, console: Console, log_hint: str) -> None:
        self.console = console
        self.log_hint = log_hint
        self.records: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        rec: dict[str, Any] = {"stage": name, "status": "running"}
        self.records.append(rec)
        self.console.print(f"[bold cyan]▶ {name}[/]")
        t0 = time.monotonic()
        try:
            yield rec
        except StageFailedError:
            rec["status"] = "failed"
            raise
        except Exception as exc:
            rec["status"] = "failed"
            rec["detail"] = f"{type(exc).__name__}: {exc}"
            log.debug("stage %s failed:\n%s", name, traceback.format_exc())
            raise StageFailedError(name, rec["detail"], self.log_hint) from exc
        finally:
            rec["seconds"] = round(time.monotonic() - t0, 2)
        rec["status"] = "ok"
        self.console.print(f"[green]✔ {name}[/] ({rec['seconds']} s) {rec.get('detail', '')}")

    def check(self, stage: str, ok: bool, detail: str) -> None:
        if not ok:
            raise StageFailedError(stage, detail, self.log_hint)
