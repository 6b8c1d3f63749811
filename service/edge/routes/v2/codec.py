"""The Open Inference Protocol's tensors, without HTTP: request bodies in, arrays out, and back.

A body is a JSON header, optionally followed by raw tensor data (the binary tensor data extension: the
header's length travels in the `Inference-Header-Content-Length` HTTP header and each binary input names its
`binary_data_size`). BYTES elements in binary are each a 4-byte little-endian length and then the bytes; in
JSON, an input's BYTES elements are base64 strings (encoded image files are not text) and an output's are text.
Every malformed tensor raises TensorError with a message that names the tensor and the fix.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from service.core.failures import MalformedRequestError, PayloadTooLargeError
from service.edge.routes.v2.schemas import (
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    RequestInput,
    ResponseOutput,
    ResponseParameters,
    TensorParameters,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
# ASCII digits only (int() would also take "+12", " 12 ", "1_2" and other scripts' digits); 18 fit an int64.
_HEADER_LENGTH_VALUE = re.compile(r"[0-9]{1,18}")
# What parsing a JSON header may allocate, an upper bound measured with pydantic-core 2.50 (peak RSS over
# InferenceRequest.model_validate_json): a string that holds one character beyond the BMP, written as a JSON
# escape, becomes 4 bytes per character in Python beside the parser's own copy: 6.0 bytes per header byte
# (a 48 MB header: 288 MB). Each JSON value costs at most ~225 bytes besides (161,000 one-element lists:
# 36 MB); floats 77, ints 46.
PARSE_BYTES_PER_HEADER_BYTE = 6
PARSE_BYTES_PER_VALUE = 256
_LENGTH_PREFIX = struct.Struct("<I")
_FP32 = np.dtype("<f4")


class TensorError(MalformedRequestError):
    """A request the protocol or this model's signature does not allow; safe to show the client."""


class TensorTooLargeError(TensorError, PayloadTooLargeError):
    """An element (an encoded image) is over the per-file byte limit."""


@dataclass(frozen=True)
class Signature:
    """One tensor of the model's signature: -1 in `shape` is the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> MetadataTensor:
        return MetadataTensor(name=self.name, datatype=self.datatype, shape=list(self.shape))


# Inputs: encoded image files (the OpenVINO Model Server convention) or raw 0-255 gray levels.
IMAGE_BYTES = Signature("image_bytes", "BYTES", (-1,))
PIXELS = Signature("input", "FP32", (-1, 100, 100, 1))
INPUTS = (IMAGE_BYTES, PIXELS)
PROBABILITY = Signature("probability", "FP32", (-1, 1))
LABEL = Signature("label", "BYTES", (-1,))
OUTPUTS = (PROBABILITY, LABEL)


@dataclass(frozen=True)
class Limits:
    """The service's upload limits as they apply to one request's tensors."""

    max_items: int  # MAX_FILES: images per request
    max_item_bytes: int  # MAX_FILE_BYTES: bytes per encoded image

    @property
    def max_json_values(self) -> int:
        """The most comma-separated JSON values a valid request can hold: MAX_FILES images of raw pixels, plus
        room for the request's own fields."""
        return self.max_items * math.prod(PIXELS.shape[1:]) + 1024


@dataclass(frozen=True)
class ParsedRequest:
    request: InferenceRequest
    binary: dict[int, bytes]  # input index -> its raw data, for inputs sent with binary_data_size


@dataclass(frozen=True)
class ModelInput:
    """The one input a request carries: encoded files (`images`) or an (N, 100, 100, 1) array (`pixels`)."""

    images: list[bytes] | None = None
    pixels: np.ndarray | None = None


# ---- Request -----------------------------------------------------------------------------------------------


def header_length_of(value: str | None) -> int | None:
    """The Inference-Header-Content-Length header's value: ASCII digits, nothing else."""
    if value is None:
        return None
    if not _HEADER_LENGTH_VALUE.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise TensorError(
            f"{HEADER_LENGTH} must be the JSON header's length in bytes, written in ASCII digits, not {shown!r}"
        )
    return int(value)


def parse_cost_bytes(body: bytes, header_length: int | None) -> int:
    """An upper bound of the memory that parsing this body's JSON header allocates (the binary data that
    may follow it is sliced, not parsed)."""
    end = len(body) if header_length is None else min(header_length, len(body))
    return PARSE_BYTES_PER_HEADER_BYTE * end + PARSE_BYTES_PER_VALUE * (body.count(b",", 0, end) + 1)


def parse_request(body: bytes, header_length: int | None, limits: Limits) -> ParsedRequest:
    """The JSON header, validated, and each binary input's slice of the rest of the body."""
    if header_length is None:
        header, rest = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise TensorError(
                f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes: "
                "it must be the length of the JSON header at the start of the body"
            )
        header, rest = body[:header_length], body[header_length:]
    # Measured: a 64 MB header of six million numbers holds the GIL for 1-5 s while it is parsed (in a worker
    # thread too), stalling every other request; counting its commas takes 0.06 s. No valid request has more.
    if header.count(b",") >= limits.max_json_values:
        raise TensorError(
            f"the JSON request holds more values than {limits.max_items} images (MAX_FILES) can: "
            "send fewer images per request, or their data as binary (binary_data_size)"
        )
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise TensorError(f"the inference request is not valid: {_first_error(exc)}") from exc
    binary: dict[int, bytes] = {}
    offset = 0
    for index, tensor in enumerate(request.inputs):
        size = tensor.parameters.binary_data_size if tensor.parameters else None
        if size is None:
            continue
        if header_length is None:
            raise TensorError(
                f"input '{tensor.name}' has binary_data_size but the request has no {HEADER_LENGTH} header"
            )
        if offset + size > len(rest):
            raise TensorError(
                f"input '{tensor.name}' declares binary_data_size {size} but only {len(rest) - offset} bytes "
                "follow the JSON header for it"
            )
        binary[index] = rest[offset : offset + size]
        offset += size
    if offset != len(rest):
        raise TensorError(
            f"{len(rest) - offset} bytes after the JSON header belong to no input: "
            "the binary_data_size values must add up to the body length minus " + HEADER_LENGTH
        )
    return ParsedRequest(request, binary)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def read_input(parsed: ParsedRequest, limits: Limits) -> ModelInput:
    """The request's one input, decoded and checked against the model's signature and the limits."""
    inputs = parsed.request.inputs
    if len(inputs) != 1:
        raise one_input_error(len(inputs))
    tensor = inputs[0]
    spec = signature_of(tensor.name, tensor.datatype)
    count = element_count(tensor.shape, spec, limits)
    binary = parsed.binary.get(0)
    if binary is not None and tensor.data is not None:
        raise TensorError(f"input '{spec.name}' has both 'data' and binary_data_size: send one of them")
    if binary is None and tensor.data is None:
        raise TensorError(f"input '{spec.name}' has no data: send 'data' or binary data with binary_data_size")
    if binary is not None:
        return read_raw(spec, tensor.shape, binary, limits)
    if spec is IMAGE_BYTES:
        return ModelInput(images=_bytes_from_json(tensor.data or [], count, spec.name, limits.max_item_bytes))
    return ModelInput(pixels=_checked_pixels(_fp32_from_json(tensor, count).reshape(tensor.shape), spec.name))


def _input_names() -> str:
    return ", ".join(f"'{s.name}' ({s.datatype} {list(s.shape)})" for s in INPUTS)


def one_input_error(count: int) -> TensorError:
    return TensorError(f"send exactly one input, not {count}: {_input_names()}")


def signature_of(name: str, datatype: str) -> Signature:
    """The model's input of that name, if the datatype is its own."""
    spec = next((s for s in INPUTS if s.name == name), None)
    if spec is None:
        raise TensorError(f"the model has no input '{name}': its inputs are {_input_names()}")
    if datatype != spec.datatype:
        raise TensorError(f"input '{spec.name}' must be {spec.datatype}, not {datatype}")
    return spec


def read_raw(spec: Signature, shape: Sequence[int], data: bytes, limits: Limits) -> ModelInput:
    """An input whose data is the protocol's raw layout (HTTP's binary data, gRPC's raw_input_contents):
    little-endian FP32 values, or BYTES elements each a 4-byte little-endian length and then the bytes."""
    count = element_count(shape, spec, limits)
    if spec is IMAGE_BYTES:
        return ModelInput(images=_bytes_from_binary(data, count, spec.name, limits.max_item_bytes))
    return ModelInput(pixels=_checked_pixels(_fp32_from_binary(data, count, spec.name).reshape(shape), spec.name))


def read_elements(spec: Signature, shape: Sequence[int], elements: Sequence[bytes], limits: Limits) -> ModelInput:
    """A BYTES input given element by element (gRPC's typed `bytes_contents`)."""
    count = element_count(shape, spec, limits)
    if len(elements) != count:
        raise TensorError(f"input '{spec.name}' has shape {list(shape)} but its contents hold {len(elements)} elements")
    for index, element in enumerate(elements):
        if len(element) > limits.max_item_bytes:
            raise _too_large(spec.name, index, len(element), limits.max_item_bytes)
    return ModelInput(images=list(elements))


def read_values(spec: Signature, shape: Sequence[int], values: np.ndarray, limits: Limits) -> ModelInput:
    """An FP32 input given as typed values (gRPC's `fp32_contents`), flat, in row-major order."""
    count = element_count(shape, spec, limits)
    if values.size != count:
        raise TensorError(
            f"input '{spec.name}' has shape {list(shape)} ({count} values) but its contents hold {values.size}"
        )
    return ModelInput(pixels=_checked_pixels(values.astype(np.float32, copy=False).reshape(shape), spec.name))


def element_count(shape: Sequence[int], spec: Signature, limits: Limits) -> int:
    """The elements a tensor of this shape holds, once the shape fits the signature and MAX_FILES."""
    if len(shape) != len(spec.shape) or any(
        want != -1 and got != want for got, want in zip(shape, spec.shape, strict=True)
    ):
        raise TensorError(
            f"input '{spec.name}' must have shape {list(spec.shape)} (-1: any batch), not {list(shape)}"
        )
    batch = shape[0]
    if batch < 1:
        raise TensorError(f"input '{spec.name}' has batch size {batch}: send at least one image")
    if batch > limits.max_items:
        raise TensorError(
            f"input '{spec.name}' has {batch} images, over the limit of {limits.max_items} per request "
            "(MAX_FILES): split them over several requests"
        )
    return math.prod(shape)


def _flatten(data: Sequence[object]) -> list[object]:
    flat: list[object] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _too_large(name: str, index: int, size: int, limit: int) -> TensorTooLargeError:
    return TensorTooLargeError(
        f"input '{name}' element {index} is {size} bytes, over the {limit}-byte limit per file (MAX_FILE_BYTES)"
    )


def _bytes_from_binary(data: bytes, count: int, name: str, max_item_bytes: int) -> list[bytes]:
    items: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _LENGTH_PREFIX.size:
            raise TensorError(
                f"input '{name}': element {len(items)} is cut off inside its 4-byte length prefix "
                "(each BYTES element is a 4-byte little-endian length, then the bytes)"
            )
        (size,) = _LENGTH_PREFIX.unpack_from(data, offset)
        offset += _LENGTH_PREFIX.size
        if size > max_item_bytes:
            raise _too_large(name, len(items), size, max_item_bytes)
        if size > len(data) - offset:
            raise TensorError(
                f"input '{name}': element {len(items)} declares {size} bytes but {len(data) - offset} remain "
                "in its binary data"
            )
        items.append(data[offset : offset + size])
        offset += size
        if len(items) > count:
            raise TensorError(f"input '{name}' has shape [{count}] but its binary data holds more elements")
    if len(items) != count:
        raise TensorError(f"input '{name}' has shape [{count}] but its binary data holds {len(items)} elements")
    return items


def _bytes_from_json(data: Sequence[object], count: int, name: str, max_item_bytes: int) -> list[bytes]:
    flat = _flatten(data)
    if len(flat) != count:
        raise TensorError(f"input '{name}' has shape [{count}] but 'data' holds {len(flat)} elements")
    items = []
    for index, element in enumerate(flat):
        if not isinstance(element, str):
            raise TensorError(f"input '{name}' element {index} must be a base64 string, not {type(element).__name__}")
        # Checked before decoding: base64 is 4 characters for every 3 bytes.
        if len(element) // 4 * 3 > max_item_bytes + 2:
            raise _too_large(name, index, len(element) // 4 * 3, max_item_bytes)
        try:
            decoded = base64.b64decode(element, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TensorError(f"input '{name}' element {index} is not valid base64: {exc}") from exc
        if len(decoded) > max_item_bytes:
            raise _too_large(name, index, len(decoded), max_item_bytes)
        items.append(decoded)
    return items


def _fp32_from_binary(data: bytes, count: int, name: str) -> np.ndarray:
    if len(data) != count * _FP32.itemsize:
        raise TensorError(
            f"input '{name}' needs {count} FP32 values ({count * _FP32.itemsize} bytes) but its binary data "
            f"has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=_FP32).astype(np.float32)


def _fp32_from_json(tensor: RequestInput, count: int) -> np.ndarray:
    # JSON true/false are not numbers: numpy would read them as 1 and 0 (or the whole list as bool).
    if any(isinstance(value, bool) for value in _flatten(tensor.data or [])):
        raise TensorError(f"input '{tensor.name}': 'data' must hold only numbers (FP32), not true or false")
    try:
        values = np.asarray(tensor.data, dtype=None)
    except (ValueError, TypeError) as exc:
        raise TensorError(f"input '{tensor.name}': 'data' is not a list of numbers of one shape") from exc
    if values.dtype.kind not in "iuf":
        raise TensorError(f"input '{tensor.name}': 'data' must hold only numbers (FP32), flat or nested")
    if values.size != count:
        raise TensorError(
            f"input '{tensor.name}' has shape {tensor.shape} ({count} values) but 'data' holds {values.size}"
        )
    # Out-of-range values become inf here and are refused by _checked_pixels with their position.
    with np.errstate(over="ignore"):
        return values.astype(np.float32).reshape(-1)


def _checked_pixels(pixels: np.ndarray, name: str) -> np.ndarray:
    bad = ~(np.isfinite(pixels) & (pixels >= 0) & (pixels <= 255))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise TensorError(
            f"input '{name}' value {pixels[where]!r} at {list(where)} is not a gray level: "
            "send raw pixels between 0 and 255 (the model normalises them itself)"
        )
    return pixels


# ---- Response ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputChoice:
    signature: Signature
    binary: bool


def choose_outputs(request: InferenceRequest) -> list[OutputChoice]:
    """The outputs to send, in the order asked for (all when none are named), each in JSON or binary."""
    default = bool(request.parameters and request.parameters.binary_data_output)
    if request.outputs is None:
        return [OutputChoice(spec, default) for spec in OUTPUTS]
    specs = outputs_named([wanted.name for wanted in request.outputs])
    choices = []
    for spec, wanted in zip(specs, request.outputs, strict=True):
        binary = wanted.parameters.binary_data if wanted.parameters else None
        choices.append(OutputChoice(spec, default if binary is None else binary))
    return choices


def outputs_named(names: Sequence[str]) -> list[Signature]:
    """The model's outputs of these names, in this order; an unknown or repeated name is an error."""
    by_name = {spec.name: spec for spec in OUTPUTS}
    specs: list[Signature] = []
    for name in names:
        spec = by_name.get(name)
        if spec is None:
            raise TensorError(f"the model has no output '{name}': its outputs are {sorted(by_name)}")
        # The protocol does not define a repeated output name: it is a client's mistake, and answering each
        # copy (2,000 of them were sent) would only multiply the response.
        if spec in specs:
            raise TensorError(f"output '{name}' is requested more than once: name each output once")
        specs.append(spec)
    return specs


def raw_output(spec: Signature, probabilities: Sequence[float], labels: Sequence[str]) -> tuple[list[int], bytes]:
    """One output's shape and its data in the protocol's raw layout (as `read_raw` reads inputs)."""
    if spec is PROBABILITY:
        return [len(probabilities), 1], np.asarray(probabilities, dtype=_FP32).tobytes()
    return [len(labels)], b"".join(_LENGTH_PREFIX.pack(len(item)) + item for item in (x.encode() for x in labels))


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    header_length: int | None  # set when binary data follows the JSON header


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[OutputChoice],
    probabilities: Sequence[float],
    labels: Sequence[str],
    ids: Sequence[str] = (),
) -> EncodedResponse:
    """The response body: probability [N, 1] FP32 and label [N] BYTES, as the request chose them."""
    tensors = []
    blobs = []
    for choice in outputs:
        spec = choice.signature
        shape, raw = raw_output(spec, probabilities, labels)
        if spec is PROBABILITY:
            json_data: list[object] = [float(v) for v in np.asarray(probabilities, dtype=_FP32)]
        else:
            json_data = list(labels)
        if choice.binary:
            blobs.append(raw)
            tensors.append(
                ResponseOutput(
                    name=spec.name, shape=shape, datatype=spec.datatype,
                    parameters=TensorParameters(binary_data_size=len(raw)),
                )
            )
        else:
            tensors.append(ResponseOutput(name=spec.name, shape=shape, datatype=spec.datatype, data=json_data))
    header = InferenceResponse(
        model_name=model_name, model_version=model_version, id=request_id,
        parameters=ResponseParameters(ids=list(ids)) if ids else None, outputs=tensors,
    ).model_dump_json(exclude_none=True).encode()
    if not blobs:
        return EncodedResponse(header, None)
    return EncodedResponse(header + b"".join(blobs), len(header))
