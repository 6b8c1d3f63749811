"""service.edge.grpc.tensors without a server: ModelInferRequest messages in, tensors out, and responses back."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from service.edge.grpc import grpc_predict_v2_pb2 as pb
from service.edge.grpc import tensors
from service.edge.routes.v2 import codec

LIMITS = codec.Limits(max_items=4, max_item_bytes=64)
PIXELS = [1, 100, 100, 1]


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def request(name: str = "image_bytes", datatype: str = "BYTES", shape: list[int] | None = None, *,
            raw: list[bytes] | None = None, outputs: list[str] = (), **contents: object) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=raw or [])
    tensor = message.inputs.add(name=name, datatype=datatype, shape=shape if shape is not None else [2])
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    for output in outputs:
        message.outputs.add(name=output)
    return message


def test_raw_bytes_are_length_prefixed_elements_and_ask_for_raw_outputs() -> None:
    call = tensors.read_request(request(raw=[length_prefixed(b"first", b"")]), LIMITS)
    assert call.tensor.images == [b"first", b""]
    assert call.raw
    assert call.outputs == list(codec.OUTPUTS)


def test_typed_bytes_are_the_elements_themselves() -> None:
    call = tensors.read_request(request(bytes_contents=[b"one", b"\xff\x00"]), LIMITS)
    assert call.tensor.images == [b"one", b"\xff\x00"]
    assert not call.raw


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_fp32_pixels_become_the_declared_shape(raw: bool) -> None:
    pixels = (np.arange(2 * 100 * 100, dtype=np.float32) % 256).reshape(2, 100, 100, 1)
    shape = [2, 100, 100, 1]
    message = (request("input", "FP32", shape, raw=[pixels.astype("<f4").tobytes()]) if raw
               else request("input", "FP32", shape, fp32_contents=pixels.ravel().tolist()))
    call = tensors.read_request(message, LIMITS)
    assert call.tensor.pixels is not None
    np.testing.assert_array_equal(call.tensor.pixels, pixels)


def test_the_outputs_come_in_the_order_asked_for() -> None:
    call = tensors.read_request(request(bytes_contents=[b"a", b"b"], outputs=["label", "probability"]), LIMITS)
    assert [spec.name for spec in call.outputs] == ["label", "probability"]


@pytest.mark.parametrize(
    ("message", "match"),
    [
        pytest.param(pb.ModelInferRequest(model_name="m"), "exactly one input, not 0", id="no-inputs"),
        pytest.param(request("x", bytes_contents=[b"a", b"b"]), "no input 'x'", id="unknown-input"),
        pytest.param(request("image_bytes", "FP32", fp32_contents=[1, 2]), "must be BYTES, not FP32",
                     id="image-bytes-as-fp32"),
        pytest.param(request("input", "BYTES", PIXELS, bytes_contents=[b"a"]), "must be FP32, not BYTES",
                     id="pixels-as-bytes"),
        pytest.param(request("input", "FP32", PIXELS, int_contents=[1] * 10_000), "not int_contents",
                     id="fp32-in-int-contents"),
        pytest.param(request(bytes_contents=[b"a", b"b"], fp32_contents=[1.0]), "not fp32_contents",
                     id="bytes-and-fp32-contents"),
        pytest.param(request(), "has no data", id="no-data"),
        pytest.param(request(raw=[length_prefixed(b"a", b"b")], bytes_contents=[b"a", b"b"]),
                     "both in contents and in raw_input_contents", id="contents-and-raw"),
        pytest.param(request(raw=[length_prefixed(b"a", b"b")] * 2), "holds 2 entries for 1 input",
                     id="two-raw-entries"),
        pytest.param(request(bytes_contents=[b"a"]), r"shape \[2\] but its contents hold 1", id="short-contents"),
        pytest.param(request(raw=[length_prefixed(b"a")]), "holds 1 elements", id="short-raw"),
        pytest.param(request(raw=[length_prefixed(b"a", b"b", b"c")]), "holds more elements", id="long-raw"),
        pytest.param(request(raw=[b"\x01\x00"]), "inside its 4-byte length prefix", id="cut-length-prefix"),
        pytest.param(request(shape=[0], bytes_contents=[]), "at least one image", id="empty-batch"),
        pytest.param(request(shape=[-3], bytes_contents=[b"a"]), "at least one image", id="negative-batch"),
        pytest.param(request(shape=[2**62], bytes_contents=[b"a"]), "MAX_FILES", id="huge-batch"),
        pytest.param(request(shape=[5], bytes_contents=[b"a"] * 5), "over the limit of 4", id="over-max-files"),
        pytest.param(request(shape=[2, 1], bytes_contents=[b"a", b"b"]), r"must have shape \[-1\]", id="wrong-rank"),
        pytest.param(request("input", "FP32", [1, 50, 200, 1], fp32_contents=[1.0] * 10_000), "must have shape",
                     id="wrong-dimensions"),
        pytest.param(request("input", "FP32", PIXELS, fp32_contents=[1.0] * 10), "hold 10", id="fp32-length"),
        pytest.param(request("input", "FP32", PIXELS, raw=[b"\x00" * 12]), r"\(40000 bytes\)",
                     id="fp32-raw-length"),
        pytest.param(request("input", "FP32", PIXELS, fp32_contents=[300.0] * 10_000), "between 0 and 255",
                     id="over-255"),
        pytest.param(request("input", "FP32", PIXELS, fp32_contents=[float("nan")] * 10_000), "between 0 and 255",
                     id="nan"),
        pytest.param(request(bytes_contents=[b"a", b"b"], outputs=["scores"]), "no output 'scores'",
                     id="unknown-output"),
        pytest.param(request(bytes_contents=[b"a", b"b"], outputs=["label", "label"]), "more than once",
                     id="repeated-output"),
    ],
)
def test_a_bad_request_is_a_tensor_error_naming_the_fix(message: pb.ModelInferRequest, match: str) -> None:
    with pytest.raises(codec.TensorError, match=match):
        tensors.read_request(message, LIMITS)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_an_element_over_max_file_bytes_is_too_large(raw: bool) -> None:
    big = b"x" * 65
    message = request(raw=[length_prefixed(b"a", big)]) if raw else request(bytes_contents=[b"a", big])
    with pytest.raises(codec.TensorTooLargeError, match="element 1 is 65 bytes, over the 64-byte limit"):
        tensors.read_request(message, LIMITS)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_the_response_carries_both_outputs_and_the_ids(raw: bool) -> None:
    response = tensors.encode_response(
        model_name="m", model_version="3", request_id="r-1", outputs=list(codec.OUTPUTS), raw=raw,
        probabilities=[0.25, 0.75], labels=["functional", "defective"], ids=["id-a", "id-b"],
    )
    assert (response.model_name, response.model_version, response.id) == ("m", "3", "r-1")
    assert response.parameters["ids"].string_param == "id-a,id-b"
    probability, label = response.outputs
    assert (probability.name, probability.datatype, list(probability.shape)) == ("probability", "FP32", [2, 1])
    assert (label.name, label.datatype, list(label.shape)) == ("label", "BYTES", [2])
    if raw:
        assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [0.25, 0.75]
        assert response.raw_output_contents[1] == length_prefixed(b"functional", b"defective")
        assert not probability.HasField("contents")
    else:
        assert list(probability.contents.fp32_contents) == [0.25, 0.75]
        assert list(label.contents.bytes_contents) == [b"functional", b"defective"]
        assert not response.raw_output_contents
