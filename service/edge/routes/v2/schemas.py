"""The Open Inference Protocol's (KServe V2) JSON bodies, as pydantic models.

Field names and shapes follow the protocol (kserve.github.io, "V2 Inference Protocol"), so /docs shows what
Triton and KServe clients send and get. Tensor `parameters` are open: clients add their own keys, and the
ones this server reads (`binary_data_size`, `binary_data`, `binary_data_output`) are typed here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

Datatype = str  # "BOOL", "UINT8", ... "FP32", "BYTES": checked against the model's metadata, not here.


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TensorParameters(_Open):
    binary_data_size: StrictInt | None = Field(
        None, ge=0, description="this input's data follows the JSON header in the body, this many bytes"
    )


class RequestInput(BaseModel):
    name: str
    # Strict: JSON true, 1.0 or "1" is not a dimension (pydantic's lax mode would read them as 1).
    shape: list[StrictInt] = Field(description="one entry per dimension, row-major")
    datatype: Datatype
    parameters: TensorParameters | None = None
    data: list[Any] | None = Field(
        None, description="row-major elements, flat or nested; BYTES elements are base64 strings"
    )


class OutputParameters(_Open):
    binary_data: StrictBool | None = Field(None, description="send this output as binary data after the JSON header")


class RequestOutput(BaseModel):
    name: str
    parameters: OutputParameters | None = None


class RequestParameters(_Open):
    binary_data_output: StrictBool | None = Field(
        None, description="default for every output's `binary_data`; tritonclient sets it when it names no outputs"
    )


class InferenceRequest(BaseModel):
    id: str | None = Field(None, description="echoed in the response")
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(description="exactly one of the model's inputs")
    outputs: list[RequestOutput] | None = Field(None, description="the outputs to return; all when absent")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: TensorParameters | None = None
    data: list[Any] | None = Field(None, description="absent when the output is sent as binary data")


class ResponseParameters(_Open):
    ids: list[str] | None = Field(
        None, description="one prediction id per image, in batch order: POST /feedback takes them"
    )


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: ResponseParameters | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1 is a dimension of any size (the batch)")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class V2Error(BaseModel):
    error: str = Field(description="what went wrong and what to do about it")
