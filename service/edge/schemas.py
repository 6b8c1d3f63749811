"""Response bodies, so /docs shows exactly what clients get."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    id: str = Field(description="sha256 of the ONNX file that answered (GET /model: identity.served_sha256)")
    card_sha256: str | None = Field(
        None, description="sha256 of the file the model card describes (GET /model: identity.card_sha256); differs "
        "from id when a precision variant such as model.int8.onnx answers"
    )
    name: str
    version: str = Field(description="the version that answered: MODEL_DIR's folder name, else the card's, else 1")
    engine: str | None = Field(None, description="the inference engine that answered: onnxruntime or openvino")
    precision: str | None = Field(None, description="the precision variant that answered: fp32, int8 or bf16")
    flip_averaged: bool = Field(
        False, description="each probability is the mean over the image's four flips (FLIP_AVERAGED=true)"
    )


class Prediction(BaseModel):
    id: str = Field(description="this prediction's id (a UUID): POST /feedback takes it with the true label")
    filename: str | None = Field(description="the uploaded file's name, when the client sent one")
    probability: float = Field(ge=0, le=1, description="probability of the positive class")
    label: str = Field(description="class name at the model's decision threshold")
    scores: dict[str, float] = Field(description="each class name with its score; they sum to 1")


class PredictResponse(BaseModel):
    model: ModelRef
    threshold: float = Field(description="the threshold the labels used: the request's, THRESHOLD's or the model's")
    predictions: list[Prediction] = Field(description="one per image, in upload order")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong and what to do about it")


class Health(BaseModel):
    status: str


class ReloadResponse(BaseModel):
    previous: str = Field(description="the version that served before the call")
    serving: str = Field(description="the version that answers new requests now")
    swapped: bool = Field(description="false when no newer version was found (or, ROLLOUT=shadow, it is in shadow)")
    shadow: str | None = Field(None, description="ROLLOUT=shadow: the version scored in shadow, not served")


class VerdictIn(BaseModel):
    id: str = Field(description="a prediction id from /predict, /explain or /v2 infer", max_length=64)
    label: str = Field(description="the true class name (the model card's class_names)", max_length=64)


class VerdictOut(BaseModel):
    id: str
    version: str = Field(description="the version whose served answer the verdict judges")
    predicted: str = Field(description="the label that version answered")
    label: str = Field(description="the true label given")
    correct: bool


class FeedbackResponse(BaseModel):
    verdicts: list[VerdictOut] = Field(description="one per verdict sent, in order")


class Agreement(BaseModel):
    compared: int = Field(description="images this version scored in shadow that the served version answered")
    agreed: int = Field(description="of those, how many got the served answer's label")
    rate: float | None


class VersionQuality(BaseModel):
    version: str
    role: str = Field(description="served, shadow, or retired (answered earlier; still in the log)")
    answers: dict[str, int] = Field(description="answers in the log by role: served, shadow")
    verdicts: int = Field(description="judged answers the figures cover: its last QUALITY_WINDOW verdicts")
    correct: int
    accuracy: float | None
    precision: float | None = Field(description="for the positive class; null while it predicted none")
    recall: float | None = Field(description="for the positive class; null while none was judged")
    confusion: dict[str, dict[str, int]] = Field(description="confusion[true label][predicted label]")
    agreement: Agreement | None = Field(description="a shadow-scored version's labels beside the served ones")


class ShadowActivity(BaseModel):
    sample: float = Field(description="SHADOW_SAMPLE: the share of live images offered to the shadow")
    scored: int = Field(description="images this process scored in shadow")
    skipped: int = Field(description="images offered but skipped (no spare capacity)")


class SpoolActivity(BaseModel):
    rows: int = Field(description="rows waiting on this process's local disk for the store to answer again")
    bytes: int = Field(description="their size (bound: PREDICTION_LOG_SPOOL_BYTES)")
    since: float | None = Field(description="Unix time the oldest of them was spooled; null when none waits")


class LogActivity(BaseModel):
    store: str | None = Field(description="where the log is written (password hidden); null when it is off")
    queued: int
    spool: SpoolActivity
    written: int = Field(description="rows this process wrote")
    dropped: dict[str, int] = Field(description="rows this process dropped, by reason")


class GateReport(BaseModel):
    """The promotion gate over the judged images both versions answered (docs/feedback-loop.md)."""

    check: str | None = Field(description="promote (is the shadow version better?), rollback (is the served one "
                                           "worse than the previous, in shadow?), or null with no shadow version")
    mode: str = Field(description="PROMOTE (promote check) or ROLLBACK (rollback check): manual or auto")
    served_version: str
    shadow_version: str | None
    since: float | None = Field(description="pairs answered from this Unix time count (the last decision)")
    pairs: int = Field(description="judged images both versions answered")
    shadow_only_correct: int = Field(description="discordant pairs the shadow version got right")
    served_only_correct: int = Field(description="discordant pairs the served version got right")
    positives: int = Field(description="pairs whose verdict is the positive class")
    positives_shadow_only: int = Field(description="positives only the shadow version found")
    positives_served_only: int = Field(description="positives only the served version found")
    evidence: float | None = Field(description="E, the always-valid test's statistic for the check")
    recall_evidence: float | None = Field(description="E that recall of the positive class is lost")
    threshold: float | None = Field(description="E at which the gate acts: 1/GATE_ALPHA (rollback 2/GATE_ALPHA)")
    one_look_p: float | None = Field(description="McNemar's exact one-sided p-value, valid for one look only")
    alpha: float | None
    min_pairs: int | None
    decision: str = Field(description="pass, wait, blocked, manual (passes; left to a person) or idle")
    waiting_for: str | None = Field(description="what the gate needs before it can pass, in words")


class RolloutDecision(BaseModel):
    time: float
    action: str = Field(description="promote or rollback")
    previous: str
    serving: str
    decided_by: str = Field(description="gate (PROMOTE/ROLLBACK=auto) or operator (POST /admin/promote)")
    figures: dict[str, Any] = Field(description="the gate's figures when it was decided")


class QualityResponse(BaseModel):
    window: int = Field(description="QUALITY_WINDOW: the last verdicts per version the figures cover")
    class_names: list[str]
    positive_class: str
    served_version: str
    shadow_version: str | None
    versions: list[VersionQuality]
    shadow: ShadowActivity
    log: LogActivity
    gate: GateReport
    decisions: list[RolloutDecision] = Field(description="the newest promotions and rollbacks (the audit table)")
