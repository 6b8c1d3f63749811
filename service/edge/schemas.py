"""Response bodies, so /docs shows exactly what clients get."""

from __future__ import annotations

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
    swapped: bool = Field(description="false when no newer version was found")
