"""What rollout by evidence reads and writes in the prediction log: the judged pairs of two versions (the promotion
gate's input), the audit of promotions and rollbacks, and the expiry of image bytes no verdict will need."""

from __future__ import annotations

from sqlalchemy import and_, func, insert, select, update

from service.core.quality.store import Store
from service.core.quality.tables import Decision, decisions, feedback, predictions


def judged_pairs(
    store: Store, served_version: str, shadow_version: str, since: float
) -> list[tuple[str, str, str, int]]:
    """(true label, served label, shadow label, count) over the judged images `served_version` served and
    `shadow_version` scored in shadow, answered at or after `since` (Unix time)."""
    store.ensure_schema()
    shadow = predictions.alias("shadow")
    served = predictions.alias("served")
    # From the verdicts (few) to their answers (many) by primary key. `|| ''` and `+ 0` keep SQLite's planner,
    # which has no statistics, off the version and time indexes that would walk every answer of the version:
    # measured, 300,000 answers and 2,000 verdicts, 0.5-1 s that way, 0.04 s this way. (A verdict is never
    # older than its answer, so `feedback.time >= since` drops nothing.)
    query = (
        select(feedback.c.label, served.c.label, shadow.c.label, func.count())
        .select_from(
            feedback.join(served, and_(served.c.id == feedback.c.id, served.c.role == "served"))
            .join(shadow, and_(shadow.c.id == feedback.c.id, shadow.c.role == "shadow"))
        )
        .where(feedback.c.time >= since, served.c.time + 0 >= since, served.c.version.concat("") == served_version,
               shadow.c.version.concat("") == shadow_version)
        .group_by(feedback.c.label, served.c.label, shadow.c.label)
    )
    with store.engine.connect() as connection:
        return [(truth, by_served, by_shadow, int(count))
                for truth, by_served, by_shadow, count in connection.execute(query)]


def record_decision(store: Store, decision: Decision) -> None:
    store.ensure_schema()
    with store.engine.begin() as connection:
        connection.execute(insert(decisions).values(**decision.__dict__))


def last_decisions(store: Store, limit: int = 20) -> list[Decision]:
    """The newest first."""
    store.ensure_schema()
    query = select(*(decisions.c[name] for name in Decision.__dataclass_fields__)).order_by(
        decisions.c.time.desc(), decisions.c.id.desc()
    ).limit(limit)
    with store.engine.connect() as connection:
        return [Decision(*row) for row in connection.execute(query)]


def forget_unjudged_images(store: Store, cutoff: float, after: float = 0.0) -> int:
    """Drops the bytes of images answered in [after, cutoff) that have no verdict; the rows stay. `after`, the
    previous call's cutoff, keeps each call to the rows the time index finds since then."""
    store.ensure_schema()
    query = (
        update(predictions)
        .where(predictions.c.time >= after, predictions.c.time < cutoff, predictions.c.image.is_not(None),
               predictions.c.id.not_in(select(feedback.c.id)))
        .values(image=None)
    )
    with store.engine.begin() as connection:
        return connection.execute(query).rowcount
