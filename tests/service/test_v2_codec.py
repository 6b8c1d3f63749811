"""service.edge.routes.v2.codec without HTTP: request bodies in, tensors out, and responses back."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from service.edge.routes.v2 import codec
from service.edge.routes.v2.schemas import InferenceRequest

LIMITS = codec.Limits(max_items=4, max_item_bytes=64)


def body_of(header: dict[str, object], *blobs: bytes) -> tuple[bytes, int | None]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), (len(text) if blobs else None)


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def read(header: dict[str, object], *blobs: bytes, header_length: int | None = None) -> codec.ModelInput:
    body, length = body_of(header, *blobs)
    parsed = codec.parse_request(body, header_length if header_length is not None else length, LIMITS)
    return codec.read_input(parsed, LIMITS)


def image_input(**fields: object) -> dict[str, object]:
    return {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2], **fields}]}


def pixel_input(shape: list[int], **fields: object) -> dict[str, object]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, **fields}]}


def test_bytes_in_json_are_base64_strings() -> None:
    tensor = read(image_input(data=[base64.b64encode(b"one").decode(), base64.b64encode(b"\xff\x00").decode()]))
    assert tensor.images == [b"one", b"\xff\x00"]


def test_bytes_in_binary_are_length_prefixed_little_endian() -> None:
    blob = length_prefixed(b"first", b"")
    tensor = read(image_input(parameters={"binary_data_size": len(blob)}), blob)
    assert tensor.images == [b"first", b""]


def test_fp32_in_binary_becomes_the_declared_shape() -> None:
    pixels = np.arange(2 * 100 * 100, dtype=np.float32).reshape(2, 100, 100, 1) % 256
    blob = pixels.astype("<f4").tobytes()
    tensor = read(pixel_input([2, 100, 100, 1], parameters={"binary_data_size": len(blob)}), blob)
    assert tensor.pixels is not None
    np.testing.assert_array_equal(tensor.pixels, pixels)


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_fp32_in_json_may_be_flat_or_nested(nested: bool) -> None:
    pixels = np.full((1, 100, 100, 1), 7.5, dtype=np.float32)
    tensor = read(pixel_input([1, 100, 100, 1], data=pixels.tolist() if nested else pixels.ravel().tolist()))
    assert tensor.pixels is not None
    np.testing.assert_array_equal(tensor.pixels, pixels)


def test_a_binary_input_and_its_header_split_the_body_exactly() -> None:
    blob = length_prefixed(b"a", b"b")
    body, length = body_of(image_input(parameters={"binary_data_size": len(blob)}), blob)
    parsed = codec.parse_request(body, length, LIMITS)
    assert parsed.binary == {0: blob}


ONE_PIXEL_IMAGE = [1, 100, 100, 1]


@pytest.mark.parametrize(
    ("header", "blobs", "header_length", "match"),
    [
        pytest.param({"inputs": []}, (), None, "exactly one input", id="no-inputs"),
        pytest.param(
            {"inputs": image_input(data=["YQ==", "YQ=="])["inputs"] * 2}, (), None, "exactly one", id="two-inputs"
        ),
        pytest.param({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["YQ=="]}]}, (), None,
                     "no input 'x'", id="unknown-input"),
        pytest.param({"inputs": [{"name": "image_bytes", "datatype": "FP32", "shape": [1], "data": [1]}]}, (), None,
                     "must be BYTES", id="wrong-datatype"),
        pytest.param(image_input(data=["YQ=="]), (), None, r"shape \[2\] but 'data' holds 1", id="short-data"),
        pytest.param(image_input(), (), None, "has no data", id="missing-data"),
        pytest.param(image_input(data=["YQ==", "not base64!"]), (), None, "element 1 is not valid base64",
                     id="bad-base64"),
        pytest.param(image_input(data=["YQ==", 5]), (), None, "must be a base64 string", id="number-as-bytes"),
        pytest.param({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [0], "data": []}]}, (), None,
                     "at least one image", id="empty-batch"),
        pytest.param({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [-3], "data": []}]}, (), None,
                     "at least one image", id="negative-shape"),
        pytest.param({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2**62], "data": []}]}, (),
                     None, "MAX_FILES", id="huge-shape"),
        pytest.param({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [5], "data": []}]}, (), None,
                     "over the limit of 4", id="more-images-than-max-files"),
        pytest.param(pixel_input([1, 100, 100]), (), None, r"must have shape \[-1, 100, 100, 1\]", id="wrong-rank"),
        pytest.param(pixel_input([1, 50, 200, 1]), (), None, "must have shape", id="wrong-dimensions"),
        pytest.param(pixel_input(ONE_PIXEL_IMAGE, data=[1.0] * 10), (), None, "holds 10", id="fp32-data-length"),
        pytest.param(pixel_input(ONE_PIXEL_IMAGE, data=["1"] * 10_000), (), None, "only numbers",
                     id="fp32-as-strings"),
        pytest.param(pixel_input(ONE_PIXEL_IMAGE, data=[[1.0], [1.0, 2.0]]), (), None, "one shape",
                     id="ragged-data"),
        pytest.param(pixel_input(ONE_PIXEL_IMAGE, data=[300.0] * 10_000), (), None, "between 0 and 255",
                     id="over-255"),
        pytest.param(pixel_input(ONE_PIXEL_IMAGE, data=[-1] * 10_000), (), None, "between 0 and 255",
                     id="negative-pixel"),
        pytest.param(pixel_input(ONE_PIXEL_IMAGE, data=[1e39] * 10_000), (), None, "between 0 and 255",
                     id="overflows-fp32"),
        pytest.param(pixel_input(ONE_PIXEL_IMAGE, parameters={"binary_data_size": 12}), (b"\x00" * 12,), None,
                     r"needs 10000 FP32 values \(40000 bytes\)", id="fp32-binary-length"),
        pytest.param(image_input(parameters={"binary_data_size": 100}), (b"\x00" * 8,), None, "only 8 bytes",
                     id="binary-size-overruns-body"),
        pytest.param(image_input(parameters={"binary_data_size": 4}), (length_prefixed(b"", b"x"),), None,
                     "belong to no input", id="bytes-after-the-last-input"),
        pytest.param(image_input(parameters={"binary_data_size": 6}), (length_prefixed(b"ab"),), None,
                     "holds 1 elements", id="too-few-binary-elements"),
        pytest.param(image_input(parameters={"binary_data_size": 3}), (b"\x01\x00\x00",), None,
                     "inside its 4-byte length prefix", id="cut-length-prefix"),
        pytest.param(image_input(parameters={"binary_data_size": 6}), (struct.pack("<I", 9) + b"ab",), None,
                     "declares 9 bytes but 2 remain", id="element-overruns-tensor"),
        pytest.param(image_input(parameters={"binary_data_size": 8}, data=["YQ==", "YQ=="]),
                     (length_prefixed(b"", b""),), None, "both 'data' and binary_data_size", id="data-and-binary"),
        pytest.param({"inputs": "nope"}, (), None, "not valid: inputs", id="inputs-not-a-list"),
        pytest.param(image_input(data=["YQ=="] * 2), (b"x",), 10_000, "Inference-Header-Content-Length is 10000",
                     id="header-length-over-body"),
    ],
)
def test_malformed_tensors_are_refused_with_a_message(
    header: dict[str, object], blobs: tuple[bytes, ...], header_length: int | None, match: str
) -> None:
    with pytest.raises(codec.TensorError, match=match) as info:
        read(header, *blobs, header_length=header_length)
    assert not isinstance(info.value, codec.TensorTooLargeError)


def test_binary_data_without_the_header_length_is_refused() -> None:
    body, _ = body_of(image_input(parameters={"binary_data_size": 0}))
    with pytest.raises(codec.TensorError, match="no Inference-Header-Content-Length"):
        codec.parse_request(body, None, LIMITS)


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"\xff\xfe", b'{"inputs": [{"name": 1}]}'])
def test_bodies_that_are_not_an_inference_request_are_refused(body: bytes) -> None:
    with pytest.raises(codec.TensorError, match="not valid"):
        codec.parse_request(body, None, LIMITS)


def test_a_header_with_more_values_than_max_files_images_can_hold_is_refused_before_parsing() -> None:
    most = LIMITS.max_items * 100 * 100
    pixels = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 100, 100, 1], "data": [1.0] * most}]}
    assert read(pixels).pixels.shape == (4, 100, 100, 1)  # type: ignore[union-attr]
    with pytest.raises(codec.TensorError, match=r"more values than 4 images \(MAX_FILES\)"):
        codec.parse_request(json.dumps({"inputs": [], "x": [0] * (most + 1024)}).encode(), None, LIMITS)


def test_an_element_over_max_file_bytes_is_too_large_in_json_and_binary() -> None:
    big = b"\x00" * (LIMITS.max_item_bytes + 1)
    with pytest.raises(codec.TensorTooLargeError, match=r"element 1 is 65 bytes.*MAX_FILE_BYTES"):
        read(image_input(data=["YQ==", base64.b64encode(big).decode()]))
    blob = length_prefixed(b"", big)
    with pytest.raises(codec.TensorTooLargeError, match="element 1 is 65 bytes"):
        read(image_input(parameters={"binary_data_size": len(blob)}), blob)


def test_a_huge_declared_element_length_is_refused_before_it_is_read() -> None:
    blob = struct.pack("<I", 2**32 - 1)
    with pytest.raises(codec.TensorTooLargeError, match="4294967295 bytes"):
        read(image_input(parameters={"binary_data_size": len(blob)}), blob)


# ---- Outputs ----


def request(**fields: object) -> InferenceRequest:
    return InferenceRequest.model_validate({"inputs": [], **fields})


def test_all_outputs_in_json_when_none_are_named() -> None:
    choices = codec.choose_outputs(request())
    assert [(c.signature.name, c.binary) for c in choices] == [("probability", False), ("label", False)]


def test_binary_data_output_is_the_default_and_each_output_may_override_it() -> None:
    choices = codec.choose_outputs(
        request(
            parameters={"binary_data_output": True},
            outputs=[{"name": "label", "parameters": {"binary_data": False}}, {"name": "probability"}],
        )
    )
    assert [(c.signature.name, c.binary) for c in choices] == [("label", False), ("probability", True)]


def test_an_unknown_output_is_refused() -> None:
    with pytest.raises(codec.TensorError, match="no output 'scores'"):
        codec.choose_outputs(request(outputs=[{"name": "scores"}]))


def encode(*choices: codec.OutputChoice) -> codec.EncodedResponse:
    return codec.encode_response(
        model_name="m", model_version="3", request_id="r-1", outputs=choices,
        probabilities=[0.25, 0.75], labels=["functional", "defective"],
    )


def test_json_outputs_carry_the_values_shapes_and_id() -> None:
    encoded = encode(codec.OutputChoice(codec.PROBABILITY, False), codec.OutputChoice(codec.LABEL, False))
    assert encoded.header_length is None
    assert json.loads(encoded.body) == {
        "model_name": "m",
        "model_version": "3",
        "id": "r-1",
        "outputs": [
            {"name": "probability", "shape": [2, 1], "datatype": "FP32", "data": [0.25, 0.75]},
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["functional", "defective"]},
        ],
    }


def test_binary_outputs_follow_the_header_in_order() -> None:
    encoded = encode(codec.OutputChoice(codec.LABEL, True), codec.OutputChoice(codec.PROBABILITY, True))
    assert encoded.header_length is not None
    header = json.loads(encoded.body[: encoded.header_length])
    labels = length_prefixed(b"functional", b"defective")
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [len(labels), 8]
    assert all("data" not in o for o in header["outputs"])
    rest = encoded.body[encoded.header_length :]
    assert rest[: len(labels)] == labels
    np.testing.assert_array_equal(np.frombuffer(rest[len(labels) :], "<f4"), [0.25, 0.75])


@pytest.mark.parametrize("value", ["0", "14", "000014", "1" * 18])
def test_a_header_length_in_ascii_digits_is_read(value: str) -> None:
    assert codec.header_length_of(value) == int(value)


@pytest.mark.parametrize("value", ["", "14.0", "+14", " 14 ", "1_4", "-1", "\u0661\u0664", "\u00b2", "1" * 19])
def test_a_header_length_in_anything_but_ascii_digits_is_refused(value: str) -> None:
    with pytest.raises(codec.TensorError, match="in ASCII digits"):
        codec.header_length_of(value)


def test_the_parse_cost_counts_the_json_header_only() -> None:
    header = b'{"a": [1, 2, 3]}'
    assert codec.parse_cost_bytes(header + b"\x00" * 1000, len(header)) == 6 * len(header) + 256 * 3
    assert codec.parse_cost_bytes(header, None) == 6 * len(header) + 256 * 3
