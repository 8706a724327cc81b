"""Redis key layout, grouped by who may write them (see infra/redis/users.acl).

- slot:*, rollout: operators and the risk supervisor (rollback rewrites them)
- kill:*: operators only; a service credential cannot flip a kill switch
- risk:*: the risk supervisor (halts, cooldown, the rollout controller's state);
  operators may clear, and the rollout commands write risk:rollout
- state:<service>:*: each service's own checkpoints; state:collector:symbols is the hash
  symbol -> last-seen ns of every symbol the collector accepted (the CLI warns on others)
- audit (stream), version, channel: appended/published by whoever changes the plane
- audited: {version, digest, flags} of the state each audited change left behind; a
  state that differs from it at the same version was changed outside the audited path
"""

from __future__ import annotations

from dataclasses import dataclass

from geodesic.contracts.services import COLLECTOR


@dataclass(frozen=True)
class Keys:
    prefix: str = "geodesic"

    def _k(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    def slot(self, name: str) -> str:
        return self._k(f"slot:{name}")

    @property
    def rollout(self) -> str:
        return self._k("rollout")

    @property
    def kill_global(self) -> str:
        return self._k("kill:global")

    @property
    def kill_symbols(self) -> str:
        return self._k("kill:symbols")

    @property
    def state_global(self) -> str:
        return self._k("risk:state:global")

    @property
    def state_symbols(self) -> str:
        return self._k("risk:state:symbols")

    @property
    def cooldown_until(self) -> str:
        return self._k("risk:cooldown_until")

    @property
    def rollout_controller(self) -> str:
        """JSON {revision, state} of the automatic ramp (geodesic.rollout.machine)."""
        return self._k("risk:rollout")

    @property
    def version(self) -> str:
        return self._k("version")

    @property
    def audited(self) -> str:
        return self._k("audited")

    @property
    def audit(self) -> str:
        return self._k("audit")

    @property
    def channel(self) -> str:
        return self._k("control")

    def service_state(self, service: str, name: str) -> str:
        return self._k(f"state:{service}:{name}")

    @property
    def seen_symbols(self) -> str:
        """Hash symbol -> last-seen ns, written by the collector (its own state: the
        service ACL lets it write nothing else)."""
        return self.service_state(COLLECTOR.name, "symbols")
