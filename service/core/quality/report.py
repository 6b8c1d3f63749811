"""GET /quality's body: per version in the log, its scores over its last QUALITY_WINDOW verdicts and a shadow
version's agreement with the served answers, and what this process did (shadow scoring, rows written, dropped and
spooled). Every figure is read from running counts and indexed rows (`service.core.quality.store`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from service.core.quality.log import DROP_REASONS
from service.core.quality.shadow import SCORED, SKIPPED
from service.core.quality.store import Store

if TYPE_CHECKING:
    from service.core.quality.live import LiveQuality


def quality_report(
    quality: LiveQuality, store: Store, class_names: Sequence[str], served: str, shadow: str | None
) -> dict[str, Any]:
    """Blocking: the store's queries run here; a failing store raises (LiveQuality.report words it)."""
    counts = {row.version: row for row in store.counts()}
    versions: list[dict[str, Any]] = []
    for version in sorted(set(counts) | {served} | ({shadow} if shadow else set()), key=_version_key):
        scores = quality.scores(store, version, class_names)
        row = counts.get(version)
        compared, agreed = store.agreement(version)
        versions.append({
            "version": version,
            "role": "served" if version == served else "shadow" if version == shadow else "retired",
            "answers": {"served": row.served if row else 0, "shadow": row.shadow if row else 0},
            "verdicts": scores.verdicts,
            "correct": scores.correct,
            "accuracy": scores.accuracy,
            "precision": scores.precision,
            "recall": scores.recall,
            "confusion": scores.confusion,
            "agreement": {"compared": compared, "agreed": agreed,
                          "rate": agreed / compared if compared else None} if compared else None,
        })
    return {
        "window": quality.settings.quality_window,
        "class_names": list(class_names),
        "positive_class": class_names[1],
        "served_version": served,
        "shadow_version": shadow,
        "versions": versions,
        "shadow": {
            "sample": quality.settings.shadow_sample,
            "scored": quality.count("shadow_images_total", outcome=SCORED),
            "skipped": quality.count("shadow_images_total", outcome=SKIPPED),
        },
        "log": {
            "store": quality.store.where if quality.store else None,
            "queued": quality.log.queued if quality.log else 0,
            "spool": {"rows": quality.log.spooled if quality.log else 0,
                      "bytes": quality.log.spooled_bytes if quality.log else 0,
                      "since": quality.log.spooled_since if quality.log else None},
            "written": quality.count("prediction_log_rows_total"),
            "dropped": {reason: quality.count("prediction_log_dropped_total", reason=reason)
                        for reason in DROP_REASONS},
        },
    }


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (1 << 62, version)
