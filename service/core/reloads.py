"""What the version poller remembers between ticks."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.core.versions import Fingerprint, ModelSource


@dataclass
class PollMemory:
    """What the poller has already refused or logged. An unchanged refused version is not loaded, warmed,
    logged and counted again at every tick (Triton's poll mode, likewise, acts on changed files only);
    POST /admin/reload always tries again."""

    _refused: dict[str, Fingerprint] = field(default_factory=dict)
    _reported: set[str] = field(default_factory=set)
    max_reasons: int = 256  # so a message that varies at every tick cannot grow the set without bound

    def refused_before(self, source: ModelSource) -> bool:
        return bool(source.fingerprint) and self._refused.get(source.version or "") == source.fingerprint

    def refuse(self, source: ModelSource) -> None:
        self._refused[source.version or ""] = source.fingerprint

    def first_report(self, reason: str) -> bool:
        """True the first time this reason is seen: the one time it is logged."""
        if reason in self._reported:
            return False
        if len(self._reported) >= self.max_reasons:
            self._reported.clear()
        self._reported.add(reason)
        return True
