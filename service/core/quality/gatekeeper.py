"""Rollout by evidence: the promotion gate (service.core.quality.gate) applied to the versions the pipeline
serves and scores in shadow, on each verdict and every GATE_INTERVAL_S.

Which check applies follows the audit table (`decisions` in the log): a shadow version never decided on is a
candidate (the promotion check, PROMOTE); a shadow version that served until it was promoted away is the previous
version (the rollback check, ROLLBACK, over the pairs judged since the promotion); a shadow version that was
rolled back is promoted again only by hand (POST /admin/promote), so two versions cannot take turns on noise.
Every promotion and rollback, the gate's or an operator's, is one log line, one count in
rollout_decisions_total{action, decided_by} and one audit row with the gate's figures at the time.

The keeper also drops the bytes of images nobody judged after PREDICTION_LOG_UNJUDGED_IMAGE_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from service.core.config import QualitySettings
from service.core.failures import StoreUnavailableError, one_line
from service.core.metrics import Metrics
from service.core.quality.evidence import forget_unjudged_images, judged_pairs, last_decisions, record_decision
from service.core.quality.gate import Action, Gate, PairCounts, Verdict
from service.core.quality.store import Store
from service.core.quality.tables import Decision

log = logging.getLogger(__name__)

GATE = "gate"
OPERATOR = "operator"
DECISIONS_SHOWN = 10


@dataclass(frozen=True)
class Roles:
    """Who serves and who is scored in shadow now, and the class whose recall is guarded."""

    served: str
    shadow: str | None
    positive: str


class Swapped(Protocol):
    """What the pipeline's promote answers (service.core.pipeline.ReloadOutcome)."""

    previous: str
    serving: str
    swapped: bool
    shadow: str | None  # after a promotion: the previous version, scored in shadow


@dataclass(frozen=True)
class GateState:
    served: str
    shadow: str | None
    check: Action | None  # None: nothing to check (no shadow version, or the log is off)
    mode: Literal["manual", "auto"]  # PROMOTE for the promotion check, ROLLBACK for the rollback one
    since: float  # pairs answered from this Unix time count (the last decision between the two versions)
    verdict: Verdict | None
    note: str | None = None  # why the gate will not act whatever the evidence

    @property
    def acts(self) -> bool:
        """The gate passes, and it is the gate's to act on."""
        return (self.mode == "auto" and self.note is None and self.verdict is not None
                and self.verdict.decision == "pass")

    def report(self) -> dict[str, Any]:
        """GET /quality's `gate`."""
        verdict = self.verdict
        counts = verdict.counts if verdict else PairCounts()
        if verdict is None:
            decision, waiting = "idle", self.note
        elif self.note is not None:
            decision, waiting = verdict.decision if verdict.decision != "pass" else "manual", self.note
        elif verdict.decision == "pass" and self.mode == "manual":
            decision, waiting = "manual", (
                f"POST /admin/promote: the gate passes, and {_setting(self.check)}=manual leaves it to a person"
            )
        else:
            decision, waiting = verdict.decision, verdict.waiting_for
        return {
            "check": self.check,
            "mode": self.mode,
            "served_version": self.served,
            "shadow_version": self.shadow,
            "since": self.since or None,
            "pairs": counts.pairs,
            "shadow_only_correct": counts.candidate_only,
            "served_only_correct": counts.served_only,
            "positives": counts.positives,
            "positives_shadow_only": counts.recall_gained,
            "positives_served_only": counts.recall_lost,
            "evidence": verdict.evidence if verdict else None,
            "recall_evidence": verdict.recall_evidence if verdict else None,
            "threshold": verdict.threshold if verdict else None,
            "one_look_p": verdict.one_look_p if verdict else None,
            "alpha": verdict.alpha if verdict else None,
            "min_pairs": verdict.min_pairs if verdict else None,
            "decision": decision,
            "waiting_for": waiting,
        }


def _setting(check: Action | None) -> str:
    return "ROLLBACK" if check == "rollback" else "PROMOTE"


class GateKeeper:
    def __init__(
        self, settings: QualitySettings, store: Store | None, metrics: Metrics, *,
        roles: Callable[[], Roles], swap: Callable[[], Awaitable[Swapped]],
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.gate = Gate(settings.gate_alpha, settings.gate_min_pairs)
        self._roles = roles
        self._swap = swap
        self._poked = asyncio.Event()
        self._acting = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._reported: set[str] = set()
        self._expired_until = 0.0

    # --- the loop ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.store is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="gatekeeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """A verdict arrived (called on the event loop): the gate looks again now."""
        self._poked.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.settings.gate_interval_s)
            self._poked.clear()
            try:
                await self.tick()
            except Exception as exc:  # the keeper must outlive any error: logged once per distinct reason
                reason = one_line(exc)
                if reason not in self._reported:
                    self._reported.add(reason)
                    log.error("the promotion gate's check failed: %s; it looks again at the next verdict or in "
                              "%g s", reason, self.settings.gate_interval_s, exc_info=exc)

    async def tick(self) -> GateState:
        """One look: expires unjudged images, evaluates the gate, and acts when it passes in auto mode."""
        await asyncio.to_thread(self._expire_images)
        state = await asyncio.to_thread(self.state)
        if state.acts:
            async with self._acting:
                if self._roles() == Roles(state.served, state.shadow, self._roles().positive):
                    await self._act(GATE, state)
        return state

    # --- figures (blocking) --------------------------------------------------------------------------------

    def state(self) -> GateState:
        """The gate over the served and shadow versions now, from the log."""
        roles = self._roles()
        if self.store is None or roles.shadow is None:
            note = "the prediction log is off" if self.store is None else "no version is scored in shadow"
            return GateState(roles.served, roles.shadow, None, self.settings.promote, 0.0, None, note)
        check: Action = "promote"
        since, note = 0.0, None
        last = last_decisions(self.store, limit=1)
        if last and last[0].serving == roles.served and last[0].previous == roles.shadow:
            since = last[0].time
            if last[0].action == "promote":
                check = "rollback"
            else:
                note = (f"version {roles.shadow} was rolled back: only POST /admin/promote serves it again (the "
                        "figures count the verdicts since)")
        counts = PairCounts.of(judged_pairs(self.store, roles.served, roles.shadow, since), roles.positive)
        verdict = self.gate.promotion(counts) if check == "promote" else self.gate.rollback(counts)
        self.metrics.gate_pairs.set(counts.pairs)
        self.metrics.gate_evidence.labels(check).set(verdict.evidence)
        mode = self.settings.promote if check == "promote" else self.settings.rollback
        return GateState(roles.served, roles.shadow, check, mode, since, verdict, note)

    def report(self) -> dict[str, Any]:
        """GET /quality's `gate` and `decisions` (the newest audit rows)."""
        try:
            state = self.state()
            decisions = last_decisions(self.store, limit=DECISIONS_SHOWN) if self.store is not None else []
        except Exception as exc:
            log.warning("the prediction log's store failed a query: %s", one_line(exc))
            where = self.store.where if self.store else "the store"
            raise StoreUnavailableError(f"the prediction log ({where}) is not answering; try again later") from exc
        return {
            "gate": state.report(),
            "decisions": [{**decision.__dict__, "figures": json.loads(decision.figures)} for decision in decisions],
        }

    def _expire_images(self) -> None:
        keep_s = self.settings.prediction_log_unjudged_image_s
        if self.store is None or not self.settings.prediction_log_images or keep_s <= 0:
            return
        cutoff = time.time() - keep_s
        forgotten = forget_unjudged_images(self.store, cutoff, after=self._expired_until)
        self._expired_until = cutoff
        if forgotten:
            log.info("dropped the bytes of %d unjudged images answered over %g s ago", forgotten, keep_s)

    # --- decisions ---------------------------------------------------------------------------------------

    async def promote(self, by: str = OPERATOR) -> Swapped:
        """POST /admin/promote: swaps the served and the shadow version whatever the gate says, with the audit."""
        async with self._acting:
            try:
                state = await asyncio.to_thread(self.state) if self.store is not None else None
            except Exception as exc:  # noqa: BLE001  a person may promote while the log is down: no figures then
                log.warning("promoting without the gate's figures: %s", one_line(exc))
                state = None
            return await self._act(by, state)

    async def _act(self, by: str, state: GateState | None) -> Swapped:
        outcome = await self._swap()
        action: Action = "rollback" if state is not None and state.check == "rollback" else "promote"
        figures = state.verdict.figures() if state is not None and state.verdict is not None else {}
        self.metrics.rollout_decisions.labels(action, by).inc()
        counts = figures.get("counts", {})
        log.warning(
            "%s: version %s serves instead of version %s, decided by %s (%s judged pairs; right where the other "
            "was wrong: version %s %s times, version %s %s times; E = %s, needs %s)",
            "rollback" if action == "rollback" else "promotion", outcome.serving, outcome.previous, by,
            counts.get("pairs", "no"), outcome.serving, counts.get("candidate_only", "-"), outcome.previous,
            counts.get("served_only", "-"), _figure(figures.get("evidence")), _figure(figures.get("threshold")),
        )
        if self.store is not None:
            decision = Decision(time.time(), action, outcome.previous, outcome.serving, by, json.dumps(figures))
            try:
                await asyncio.to_thread(record_decision, self.store, decision)
            except Exception as exc:  # noqa: BLE001  the swap stands; the log line above keeps the figures
                log.error("the audit row of this %s was not written: %s", action, one_line(exc))
        return outcome


def _figure(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else "-"
