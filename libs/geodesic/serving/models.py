"""Models by id, loaded off the event loop and kept warm for hot swaps.

A slot change only names a model id; the cache loads it in a worker thread while the
current models keep serving, so a swap never stalls scoring. A model whose directory is
missing or fails verification is reported, not retried in a hot loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorentzcore.degrade import DegradeController
from lorentzcore.model import AnalogModel
from lorentzcore.scorer import Scorer

log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    pass


Loader = Callable[[Path], AnalogModel]


def model_loader(verify: bool = True) -> Loader:
    """Signature-, hash- and schema-checked loading (lifecycle.registry), or plain loading.

    The check runs before any artifact is parsed: a tampered index.bin never reaches
    hnswlib. Unverified loading exists for experiments only and is logged as such.
    """
    if not verify:
        log.warning("model verification is OFF: unsigned artifacts will be served")
        return AnalogModel.load
    from geodesic.features import SCHEMA_HASH
    from geodesic.lifecycle.registry import load_verified

    return functools.partial(load_verified, expected_schema_hash=SCHEMA_HASH)


class ModelCache:
    def __init__(
        self,
        registry_root: Path,
        *,
        capacity: int = 4,
        loader: Loader = AnalogModel.load,
        degrade_budget_ms: float | None = None,
        retry_after_s: float = 5.0,
    ) -> None:
        self.root = Path(registry_root)
        self.capacity = capacity
        self._loader = loader
        self._budget = degrade_budget_ms
        self._retry_after_s = retry_after_s
        self._scorers: OrderedDict[str, Scorer] = OrderedDict()
        self._loading: dict[str, asyncio.Task[Any]] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        self.loads = 0

    def get(self, model_id: str | None) -> Scorer | None:
        """The warm scorer for model_id, or None (and a background load is started)."""
        if not model_id:
            return None
        scorer = self._scorers.get(model_id)
        if scorer is not None:
            self._scorers.move_to_end(model_id)
            return scorer
        self.prefetch(model_id)
        return None

    def failure(self, model_id: str) -> str | None:
        entry = self._failed.get(model_id)
        return entry[1] if entry else None

    def prefetch(self, model_id: str | None) -> None:
        if not model_id or model_id in self._scorers or model_id in self._loading:
            return
        failed = self._failed.get(model_id)
        if failed and time.monotonic() - failed[0] < self._retry_after_s:
            return
        self._loading[model_id] = asyncio.get_running_loop().create_task(self._load(model_id))

    async def ensure(self, model_id: str) -> Scorer:
        """Load (or wait for) model_id; raises ModelUnavailableError with the reason."""
        self.prefetch(model_id)
        task = self._loading.get(model_id)
        if task is not None:
            await asyncio.shield(task)
        scorer = self._scorers.get(model_id)
        if scorer is None:
            raise ModelUnavailableError(self.failure(model_id) or f"{model_id}: not loaded")
        return scorer

    async def _load(self, model_id: str) -> None:
        path = self.root / model_id
        try:
            model = await asyncio.to_thread(self._loader, path)
            if model.spec.model_id != model_id:
                raise ModelUnavailableError(
                    f"{path}: manifest names {model.spec.model_id!r}, slot names {model_id!r}"
                )
            degrade = (
                DegradeController(budget_ms=self._budget) if self._budget is not None else None
            )
            self._scorers[model_id] = Scorer(model, degrade)
            self._failed.pop(model_id, None)
            self.loads += 1
            while len(self._scorers) > self.capacity:
                self._scorers.popitem(last=False)
            log.info("model %s loaded from %s", model_id, path)
        except Exception as exc:  # any artifact problem must be reported, not crash the loop
            self._failed[model_id] = (time.monotonic(), f"{type(exc).__name__}: {exc}")
            log.error("model %s failed to load: %s", model_id, exc)
        finally:
            self._loading.pop(model_id, None)

    def loaded(self) -> list[str]:
        return list(self._scorers)
