"""Reading and changing the control plane; every change is atomic, versioned and audited.

Changes that bypass this module (a raw `SET geodesic:kill:global 1` from redis-cli with
operator credentials) are found, not prevented: after each audited change the plane
stamps ``audited`` with the version it produced and a digest of the state it left. The
flags can then only differ from the stamp at the *same* version if someone wrote them
without the version bump every audited change makes; :meth:`ControlPlane.detect_external`
(run by the risk supervisor each guard cycle and by `geodesic status`) records such a
difference as an EXTERNAL_CHANGE audit entry (which in turn bumps the version and restamps,
so it is recorded once). A WATCH on the version makes concurrent detectors record it once.
The stamp is written right after the change's MULTI/EXEC, so a raw write landing in that
instant (milliseconds) is folded into the stamp: the residual blind spot, documented.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ResponseError, WatchError
from redis.typing import EncodableT, FieldT

from geodesic.control.audit import AuditEvent
from geodesic.control.keys import Keys
from geodesic.control.state import ControlSnapshot, Rollout, TradingState

log = logging.getLogger(__name__)

#: one queued Redis command: (method name, positional args, keyword args)
RedisOp = tuple[str, tuple[Any, ...], dict[str, Any]]

SLOTS = ("active", "shadow", "previous")


class CooldownActiveError(RuntimeError):
    """Raised when a promotion or rollout is attempted while a rollback cooldown holds."""


def _s(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _entry(
    kind: str, actor: str, reason: str, before: Any, after: Any, symbol: str | None
) -> dict[str, str]:
    """One audit-stream entry (see geodesic.control.audit for reading them back)."""
    if not actor or not reason:
        raise ValueError("every control change needs an actor and a reason")
    return {
        "event_id": uuid.uuid4().hex,
        "kind": kind,
        "actor": actor,
        "reason": reason,
        "from": json.dumps(before, default=str),
        "to": json.dumps(after, default=str),
        "symbol": symbol or "",
        "ts_ns": str(time.time_ns()),
    }


class ControlPlane:
    """Async access to the Redis control plane.

    Each change runs in one MULTI/EXEC: the new value, a version bump, an audit-stream entry
    (actor, reason, from, to, time) and a PUBLISH that wakes every watcher. The audit stream
    is the source of truth for history; the risk supervisor forwards it to control.events.
    """

    def __init__(self, client: aioredis.Redis, prefix: str = "geodesic") -> None:
        self.redis = client
        self.keys = Keys(prefix)

    # ---- reads -------------------------------------------------------------------------
    async def snapshot(self) -> ControlSnapshot:
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for slot in SLOTS:
            pipe.get(k.slot(slot))
        pipe.hgetall(k.rollout)
        pipe.get(k.kill_global)
        pipe.smembers(k.kill_symbols)
        pipe.get(k.state_global)
        pipe.hgetall(k.state_symbols)
        pipe.get(k.cooldown_until)
        pipe.get(k.version)
        (
            active,
            shadow,
            previous,
            rollout,
            kill_g,
            kill_s,
            st_g,
            st_s,
            cool,
            ver,
        ) = await pipe.execute()
        ro = {_s(a): _s(b) for a, b in (rollout or {}).items()}
        return ControlSnapshot(
            active=_s(active),
            shadow=_s(shadow),
            previous=_s(previous),
            rollout=Rollout(
                mode=_mode(ro.get("mode")),
                canary_fraction=float(ro.get("canary_fraction") or 0.0),
                seed=int(ro.get("seed") or 0),
                candidate=ro.get("candidate") or None,
            ),
            kill_global=_s(kill_g) == "1",
            kill_symbols=frozenset(_s(x) or "" for x in kill_s or ()),
            global_state=TradingState(_s(st_g) or TradingState.ACTIVE),
            symbol_states={
                _s(a) or "": TradingState(_s(b) or "ACTIVE") for a, b in (st_s or {}).items()
            },
            cooldown_until_ns=int(_s(cool) or 0),
            version=int(_s(ver) or 0),
        )

    async def seen_symbols(self) -> dict[str, int]:
        """Every symbol the collector has accepted, with its last-seen time (ns)."""
        raw = await self.redis.hgetall(self.keys.seen_symbols)
        out: dict[str, int] = {}
        for sym, ts in (raw or {}).items():
            text = _s(ts) or "0"
            out[_s(sym) or ""] = int(text) if text.isdigit() else 0
        return out

    async def audit_log(self, count: int = 100) -> list[dict[str, str]]:
        """The newest `count` audit entries, oldest first."""
        rows = await self.redis.xrevrange(self.keys.audit, count=count) or []
        out = []
        for entry_id, fields in reversed(rows):
            if fields is None:
                continue
            rec = {_s(a) or "": _s(b) or "" for a, b in fields.items()}
            rec["id"] = _s(entry_id) or ""
            out.append(rec)
        return out

    async def audit_range(
        self,
        since_ns: int | None = None,
        until_ns: int | None = None,
        *,
        batch: int = 1000,
        skew_s: float = 300.0,
    ) -> list[dict[str, str]]:
        """Every audit entry with since_ns <= ts_ns <= until_ns, oldest first (paged XRANGE).

        Stream ids carry the Redis server's clock, ts_ns the writer's: the id range is
        widened by ``skew_s`` and entries are then filtered on ts_ns, so clock skew between
        a client and the server cannot drop an entry from a history query.
        """
        skew_ms = int(skew_s * 1000)
        lo = "-" if since_ns is None else f"{max(0, since_ns // 1_000_000 - skew_ms)}-0"
        hi = "+" if until_ns is None else str(until_ns // 1_000_000 + skew_ms)
        out: list[dict[str, str]] = []
        while True:
            rows = await self.redis.xrange(self.keys.audit, min=lo, max=hi, count=batch) or []
            for entry_id, fields in rows:
                if fields is None:
                    continue
                rec = {_s(a) or "": _s(b) or "" for a, b in fields.items()}
                rec["id"] = _s(entry_id) or ""
                ts = rec.get("ts_ns", "")
                ts_ns = int(ts) if ts.isdigit() else int(rec["id"].split("-")[0]) * 1_000_000
                if (since_ns is None or ts_ns >= since_ns) and (
                    until_ns is None or ts_ns <= until_ns
                ):
                    out.append(rec)
            if len(rows) < batch:
                return out
            lo = f"({_s(rows[-1][0])}"

    async def audit_events(self, count: int = 100) -> list[AuditEvent]:
        """The newest ``count`` audit entries, decoded, oldest first."""
        return [AuditEvent.from_fields(r) for r in await self.audit_log(count)]

    async def audit_events_range(
        self, since_ns: int | None = None, until_ns: int | None = None
    ) -> list[AuditEvent]:
        """Decoded audit entries with since_ns <= ts_ns <= until_ns, oldest first."""
        return [AuditEvent.from_fields(r) for r in await self.audit_range(since_ns, until_ns)]

    async def first_audit_event(self) -> AuditEvent | None:
        """Where the audit trail starts (None: it is empty)."""
        rows = await self.redis.xrange(self.keys.audit, count=1)
        if not rows:
            return None
        entry_id, fields = rows[0]
        return AuditEvent.from_entry(entry_id or "", fields or {})

    # ---- writes ------------------------------------------------------------------------
    async def _commit(
        self,
        kind: str,
        actor: str,
        reason: str,
        before: Any,
        after: Any,
        ops: list[RedisOp],
        symbol: str | None = None,
    ) -> dict[str, str]:
        entry = _entry(kind, actor, reason, before, after, symbol)
        pipe = self.redis.pipeline(transaction=True)
        for name, args, kwargs in ops:
            getattr(pipe, name)(*args, **kwargs)
        self._announce(pipe, entry)
        results = await pipe.execute()
        # the plane version this change produced (the INCR right after the ops)
        version = int(results[len(ops)])
        await self._stamp(version)
        return {**entry, "version": str(version)}

    async def _stamp(self, version: int) -> None:
        """Record the state audited change ``version`` left (skipped if another change
        already followed: that one stamps its own)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.keys.version)
                snap = await self.snapshot()
                if snap.version != version:
                    return
                stamp = {"version": version, "digest": snap.digest(), "flags": snap.flags()}
                pipe.multi()
                pipe.set(self.keys.audited, json.dumps(stamp))
                await pipe.execute()
            except WatchError:
                return
            except ResponseError as exc:  # e.g. an ACL without the audited key: the change
                # itself landed; only external-change detection loses its reference
                log.warning("control change %d not stamped: %s", version, exc)

    async def detect_external(self, *, actor: str) -> dict[str, str] | None:
        """Record flags changed outside the audited path as an EXTERNAL_CHANGE entry.

        Returns the audit entry written, or None when the state matches the last audited
        change (or a change is in flight, or another detector recorded it first).
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.keys.version, self.keys.audited)
                snap = await self.snapshot()
                raw = _s(await self.redis.get(self.keys.audited))
                if raw is None:
                    return None  # nothing audited yet to compare with
                stamp = json.loads(raw)
                if int(stamp.get("version", -1)) != snap.version:
                    return None  # an audited change is being stamped right now
                if stamp.get("digest") == snap.digest():
                    return None
                before = stamp.get("flags") or {}
                after = snap.flags()
                changed = sorted(k for k in after if before.get(k) != after[k])
                entry = _entry(
                    "EXTERNAL_CHANGE",
                    actor,
                    f"control flags changed outside the audited path: {', '.join(changed)}",
                    {k: before.get(k) for k in changed},
                    {k: after[k] for k in changed},
                    None,
                )
                pipe.multi()
                pipe.incr(self.keys.version)
                fields: dict[FieldT, EncodableT] = dict(entry.items())
                pipe.xadd(self.keys.audit, fields, maxlen=100_000, approximate=True)
                pipe.publish(self.keys.channel, json.dumps({"kind": "EXTERNAL_CHANGE"}))
                results = await pipe.execute()
            except WatchError:
                return None
        await self._stamp(int(results[0]))
        return {**entry, "version": str(results[0])}

    def _announce(self, pipe: Any, entry: dict[str, str]) -> None:
        """Version bump, audit entry and wake-up: queued in the caller's MULTI."""
        pipe.incr(self.keys.version)
        pipe.xadd(self.keys.audit, entry, maxlen=100_000, approximate=True)
        symbol = entry["symbol"] or None
        pipe.publish(self.keys.channel, json.dumps({"kind": entry["kind"], "symbol": symbol}))

    async def _check_cooldown(self, force: bool) -> None:
        snap = await self.snapshot()
        if not force and snap.cooldown_until_ns > time.time_ns():
            raise CooldownActiveError(
                f"cooldown active until {snap.cooldown_until_ns} ns; an operator must clear it"
            )

    async def set_slot(
        self, slot: str, model_id: str | None, *, actor: str, reason: str
    ) -> dict[str, str]:
        if slot not in SLOTS:
            raise ValueError(f"slot: unknown slot {slot!r} (expected one of {SLOTS})")
        key = self.keys.slot(slot)
        before = _s(await self.redis.get(key))
        op: RedisOp = ("set", (key, model_id), {}) if model_id else ("delete", (key,), {})
        return await self._commit("PROMOTE", actor, reason, {slot: before}, {slot: model_id}, [op])

    async def promote(
        self, model_id: str, *, actor: str, reason: str, force: bool = False
    ) -> dict[str, str]:
        """active -> previous, model -> active; refused during a cooldown unless forced."""
        await self._check_cooldown(force)
        snap = await self.snapshot()
        ops: list[RedisOp] = [("set", (self.keys.slot("active"), model_id), {})]
        if snap.active and snap.active != model_id:
            ops.append(("set", (self.keys.slot("previous"), snap.active), {}))
        return await self._commit(
            "PROMOTE", actor, reason, {"active": snap.active}, {"active": model_id}, ops
        )

    async def set_rollout(
        self, rollout: Rollout, *, actor: str, reason: str, force: bool = False
    ) -> dict[str, str]:
        if rollout.mode != "disabled":
            await self._check_cooldown(force)
        before = (await self.snapshot()).rollout
        mapping = {
            "mode": rollout.mode,
            "canary_fraction": repr(rollout.canary_fraction),
            "seed": str(rollout.seed),
            "candidate": rollout.candidate or "",
        }
        return await self._commit(
            "ROLLOUT",
            actor,
            reason,
            asdict(before),
            asdict(rollout),
            [("hset", (self.keys.rollout,), {"mapping": mapping})],
        )

    async def rollback(
        self, *, actor: str, reason: str, cooldown_s: float = 900.0
    ) -> dict[str, str]:
        """Take the change in flight back out of service and start the cooldown.

        With a candidate on canary or full rollout, the rollout is disabled and the active
        (baseline) model keeps serving. With no rollout in flight, the last promotion is
        undone: active reverts to previous. Either way new promotions wait for the cooldown.
        """
        snap = await self.snapshot()
        k = self.keys
        until = time.time_ns() + int(cooldown_s * 1e9)
        ops: list[RedisOp] = [
            ("hset", (k.rollout,), {"mapping": {"mode": "disabled", "canary_fraction": "0.0"}}),
            ("set", (k.cooldown_until, str(until)), {}),
        ]
        after_active = snap.active
        if snap.rollout.mode == "disabled" and snap.previous:
            # no candidate in flight: what must go is the last promotion
            ops.append(("set", (k.slot("active"), snap.previous), {}))
            after_active = snap.previous
        before = {"active": snap.active, "rollout": snap.rollout.mode}
        after = {"active": after_active, "rollout": "disabled", "cooldown_until_ns": until}
        return await self._commit("ROLLBACK", actor, reason, before, after, ops)

    async def record_mode_switch(
        self, *, actor: str, reason: str, before: str, after: str
    ) -> dict[str, str]:
        """An audit-only entry: the serving mode changed (e.g. canary -> disabled)."""
        return await self._commit("MODE_SWITCH", actor, reason, before, after, [])

    async def clear_cooldown(self, *, actor: str, reason: str) -> dict[str, str]:
        before = (await self.snapshot()).cooldown_until_ns
        return await self._commit(
            "COOLDOWN", actor, reason, before, 0, [("delete", (self.keys.cooldown_until,), {})]
        )

    async def set_kill_switch(
        self, on: bool, *, actor: str, reason: str, symbol: str | None = None
    ) -> dict[str, str]:
        k = self.keys
        snap = await self.snapshot()
        if symbol is None:
            before = snap.kill_global
            op: RedisOp = (
                ("set", (k.kill_global, "1"), {}) if on else ("delete", (k.kill_global,), {})
            )
        else:
            before = symbol in snap.kill_symbols
            op = ("sadd" if on else "srem", (k.kill_symbols, symbol), {})
        return await self._commit("KILL_SWITCH", actor, reason, before, on, [op], symbol=symbol)

    async def set_trading_state(
        self, state: TradingState, *, actor: str, reason: str, symbol: str | None = None
    ) -> dict[str, str]:
        k = self.keys
        snap = await self.snapshot()
        if symbol is None:
            before = snap.global_state.value
            op: RedisOp = ("set", (k.state_global, state.value), {})
        else:
            before = snap.symbol_states.get(symbol, TradingState.ACTIVE).value
            op = ("hset", (k.state_symbols, symbol, state.value), {})
        return await self._commit("HALT", actor, reason, before, state.value, [op], symbol=symbol)

    # ---- the automatic ramp's state (geodesic.rollout) --------------------------------
    async def rollout_state(self) -> tuple[int, dict[str, Any]] | None:
        """(revision, state document) of the automatic ramp, or None when none was started."""
        raw = await self.redis.get(self.keys.rollout_controller)
        if raw is None:
            return None
        doc = json.loads(raw)
        return int(doc["revision"]), doc["state"]

    async def put_rollout_state(
        self,
        state: dict[str, Any],
        *,
        expect_revision: int | None,
        audit: tuple[str, str, Any, Any] | None = None,
    ) -> bool:
        """Write the ramp's state if nobody else wrote it since `expect_revision` was read.

        Optimistic concurrency (WATCH): an operator's pause and the controller's decision
        cannot overwrite each other; the loser re-reads and decides again. With `audit`
        (actor, reason, from, to) the write is one ROLLOUT change: versioned, audited and
        announced in the same MULTI, hence on control.events.
        """
        key = self.keys.rollout_controller
        entry = _entry("ROLLOUT", *audit, None) if audit is not None else None
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                current = int(json.loads(raw)["revision"]) if raw is not None else None
                if current != expect_revision:
                    await pipe.unwatch()
                    return False
                pipe.multi()
                doc = {"revision": (current or 0) + 1, "state": state}
                pipe.set(key, json.dumps(doc, default=str))
                if entry is not None:
                    self._announce(pipe, entry)
                results = await pipe.execute()
            except WatchError:
                return False
        if entry is not None:
            await self._stamp(int(results[1]))  # the INCR of the version, after the SET
        return True


def _mode(raw: str | None) -> Literal["disabled", "canary", "full"]:
    """A rollout mode read from Redis; anything unknown is disabled (no canary traffic)."""
    return "canary" if raw == "canary" else "full" if raw == "full" else "disabled"
