"""Per-partition state checkpoints in Redis, stored with the next input offset.

One key per (service, topic, partition) holding {"offset": n, "fp": ..., "state": {...}}
as JSON: the state reflects exactly the records before `offset`, so a restarted or
rebalanced worker seeks there and resumes with no loss and no double counting. ``fp`` is
the fingerprint of the record before `offset` (see geodesic.runtime.pipeline.Position): the
stream loop uses it to notice that the broker lost the log the offset points into.
Offsets are loaded back as Positions; checkpoints without ``fp`` still load. JSON, never
pickle.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from aiokafka import TopicPartition
from redis.typing import EncodableT, FieldT

from geodesic.control.keys import Keys
from geodesic.runtime.pipeline import Position


class CheckpointStore:
    def __init__(self, client: aioredis.Redis, service: str, prefix: str = "geodesic") -> None:
        self.redis = client
        self.service = service
        self.keys = Keys(prefix)

    def key(self, tp: TopicPartition) -> str:
        return self.keys.service_state(self.service, f"{tp.topic}:{tp.partition}")

    async def load(self, tp: TopicPartition) -> tuple[int, dict[str, Any]] | None:
        raw = await self.redis.get(self.key(tp))
        if raw is None:
            return None
        doc = json.loads(raw)
        return Position(int(doc["offset"]), doc.get("fp")), doc["state"]

    async def save_many(
        self,
        entries: dict[TopicPartition, tuple[int, dict[str, Any]]],
        *,
        hashes: dict[str, dict[FieldT, EncodableT]] | None = None,
    ) -> None:
        """Write the checkpoints, and any ``hashes`` fields (HSET key -> mapping) the
        service keeps beside them, in one transaction: one round trip per batch."""
        hashes = {k: v for k, v in (hashes or {}).items() if v}
        if not entries and not hashes:
            return
        pipe = self.redis.pipeline(transaction=True)
        for tp, (offset, state) in entries.items():
            doc = {"offset": int(offset), "fp": _fingerprint(offset), "state": state}
            pipe.set(self.key(tp), json.dumps(doc))
        for key, mapping in hashes.items():
            pipe.hset(key, mapping=mapping)
        await pipe.execute()

    async def clear(self, tps: list[TopicPartition]) -> None:
        if tps:
            await self.redis.delete(*[self.key(tp) for tp in tps])

    # A service whose state spans partitions (e.g. a join across topics run as a single
    # instance) checkpoints it whole, with every partition's next offset, in one key.
    def global_key(self, name: str) -> str:
        return self.keys.service_state(self.service, f"global:{name}")

    async def save_global(
        self, name: str, positions: dict[TopicPartition, int], state: dict[str, Any]
    ) -> None:
        doc = {
            "offsets": {f"{tp.topic}|{tp.partition}": int(o) for tp, o in positions.items()},
            "fps": {f"{tp.topic}|{tp.partition}": _fingerprint(o) for tp, o in positions.items()},
            "state": state,
        }
        await self.redis.set(self.global_key(name), json.dumps(doc))

    async def load_global(
        self, name: str
    ) -> tuple[dict[TopicPartition, int], dict[str, Any]] | None:
        raw = await self.redis.get(self.global_key(name))
        if raw is None:
            return None
        doc = json.loads(raw)
        fps = doc.get("fps", {})
        offsets: dict[TopicPartition, int] = {}
        for key, off in doc["offsets"].items():
            topic, part = key.rsplit("|", 1)
            offsets[TopicPartition(topic, int(part))] = Position(int(off), fps.get(key))
        return offsets, doc["state"]


def _fingerprint(offset: int) -> str | None:
    return getattr(offset, "fingerprint", None)
