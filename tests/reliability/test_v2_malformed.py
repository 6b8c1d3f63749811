"""POST /v2/models/{name}/infer with hostile tensor headers and bodies: 200 or a 4xx `{"error": ...}`, never a 5xx."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from fastapi.testclient import TestClient
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st

from tests.reliability.conftest import HOSTILE_LIMITS
from tests.reliability.samples import valid_images
from tests.reliability.strategies import fuzz_settings, hostile_files

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::UserWarning")]

INFER = "/v2/models/tiny-test-model/infer"
PROTOCOL = {200, 400, 404, 413, 415}
MAX_FILES = HOSTILE_LIMITS["max_files"]
MAX_FILE_BYTES = HOSTILE_LIMITS["max_file_bytes"]
MAX_BODY_BYTES = 512 * 1024
HEADER_LENGTH = "Inference-Header-Content-Length"




def assert_protocol_answer(response: object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    if currently_in_test_context():
        event(f"status {status}")
    assert status in PROTOCOL, f"{status}: {response.text}"  # type: ignore[attr-defined]
    if status == 200:
        return
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str)
    assert body["error"]


def length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


dims = st.one_of(
    st.integers(-3, 4), st.sampled_from([100, 1, 0, -1, 2**31, 2**63, 10**30]), st.integers(-(2**64), 2**64)
)
shapes = st.one_of(
    st.lists(dims, max_size=5),
    st.sampled_from([[1, 100, 100, 1], [2, 100, 100, 1], [1, 100, 100], [1], [2], [4]]),
)
names = st.sampled_from(["image_bytes"] * 4 + ["input"] * 3 + ["", "INPUT", "image", "probability"])
datatypes = st.sampled_from(["BYTES"] * 4 + ["FP32"] * 3 + ["FP16", "INT8", "UINT8", "BOOL", "", "bytes"])
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
    st.sampled_from(sorted(base64.b64encode(data).decode() for data in valid_images().values())),
    st.sampled_from(["", "====", "YQ", "not base64!", "\u00e9"]),
)
json_data = st.one_of(
    st.lists(json_scalars, max_size=6),
    st.lists(st.lists(json_scalars, max_size=3), max_size=3),
    # One image's worth of pixels: in range, out of range, or not finite.
    st.one_of(st.floats(0, 255, width=32), st.floats(width=32)).map(lambda value: [value] * 10_000),
    st.lists(st.sampled_from(sorted(base64.b64encode(data).decode() for data in valid_images().values())),
             min_size=1, max_size=MAX_FILES + 1),
    st.just([0.0] * 9_999 + [float("1e39")]),
)
sizes = st.one_of(st.integers(-2, 64), st.sampled_from([2**31, 2**63, 10**30, -(2**63)]))
parameters = st.one_of(
    st.none(),
    st.fixed_dictionaries({"binary_data_size": sizes}),
    st.dictionaries(st.sampled_from(["binary_data_size", "binary_data", "x"]), json_scalars, max_size=2),
)


@st.composite
def tensor_headers(draw: st.DrawFn) -> dict[str, object]:
    """Mostly a plausible tensor (its shape agrees with its data) with one field wrong, sometimes anything."""
    tensor: dict[str, object] = {"data": draw(json_data)}
    if draw(st.booleans()):
        name, datatype = draw(st.sampled_from([("image_bytes", "BYTES"), ("input", "FP32")]))
        count = len(tensor["data"])  # type: ignore[arg-type]
        tensor.update(name=name, datatype=datatype, shape=[count] if name == "image_bytes" else [1, 100, 100, 1])
        wrong = draw(st.sampled_from(["nothing", "name", "datatype", "shape", "data", "parameters"]))
    else:
        tensor.update(name=draw(names), datatype=draw(datatypes), shape=draw(shapes))
        wrong = draw(st.sampled_from(["nothing", "name", "datatype", "shape", "data", "parameters"]))
    if wrong in ("name", "datatype", "shape", "data"):
        if draw(st.booleans()):
            del tensor[wrong]
        else:
            tensor[wrong] = draw(st.one_of(json_scalars, st.lists(json_scalars, max_size=2)))
    elif wrong == "parameters":
        tensor["parameters"] = draw(parameters)
    return tensor


outputs = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["probability", "label", "", "scores"])},
        optional={"parameters": st.fixed_dictionaries({"binary_data": st.one_of(st.booleans(), json_scalars)})},
    ),
    max_size=3,
)
requests = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(tensor_headers(), min_size=1, max_size=1), st.lists(tensor_headers(), max_size=3))},
    optional={
        "id": st.one_of(st.text(max_size=8), st.integers()),
        "outputs": outputs,
        "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "priority"]), json_scalars, max_size=2),
    },
)
tails = st.one_of(
    st.just(b""),
    st.binary(max_size=256),
    st.lists(st.one_of(st.sampled_from(sorted(valid_images().values())), hostile_files()), max_size=MAX_FILES + 1).map(
        length_prefixed
    ),
)


@fuzz_settings(300, deadline_ms=None)
@given(request=requests)
def test_hostile_tensor_headers_in_json_get_200_or_a_protocol_4xx(
    hostile_client: TestClient, request: dict[str, object]
) -> None:
    response = hostile_client.post(INFER, content=json.dumps(request).encode())
    assert_protocol_answer(response)


@fuzz_settings(150, deadline_ms=None)
@given(request=requests, tail=tails, declared=st.one_of(st.integers(-2, 2), st.just("garbage"), st.just("")))
def test_hostile_headers_with_binary_tails_get_200_or_a_protocol_4xx(
    hostile_client: TestClient, request: dict[str, object], tail: bytes, declared: int | str
) -> None:
    header = json.dumps(request).encode()
    # The true header length, nudged by -2..2, or no number at all.
    length = str(len(header) + declared) if isinstance(declared, int) else declared
    response = hostile_client.post(INFER, content=header + tail, headers={HEADER_LENGTH: length})
    assert_protocol_answer(response)


@fuzz_settings(100, deadline_ms=None)
@given(files=st.lists(st.one_of(st.sampled_from(sorted(valid_images().values())), hostile_files()), min_size=1,
                      max_size=MAX_FILES), cut=st.integers(0, 200), binary=st.booleans())
def test_well_formed_tensors_of_hostile_files_get_200_or_a_protocol_4xx(
    hostile_client: TestClient, files: list[bytes], cut: int, binary: bool
) -> None:
    tensor: dict[str, object] = {"name": "image_bytes", "datatype": "BYTES", "shape": [len(files)]}
    if binary:
        blob = length_prefixed(files)
        tensor["parameters"] = {"binary_data_size": len(blob)}
        header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
        body = header + blob
        response = hostile_client.post(INFER, content=body, headers={HEADER_LENGTH: str(len(header))})
    else:
        tensor["data"] = [base64.b64encode(data).decode() for data in files]
        response = hostile_client.post(INFER, json={"inputs": [tensor]})
    assert_protocol_answer(response)
    if response.status_code == 200 and not binary:
        assert len(response.json()["outputs"][0]["data"]) == len(files)


@fuzz_settings(150, deadline_ms=None)
@given(data=st.data())
def test_a_valid_request_cut_or_flipped_anywhere_gets_200_or_a_protocol_4xx(
    hostile_client: TestClient, data: st.DataObject
) -> None:
    png = valid_images()["png-gray"]
    blob = length_prefixed([png, png])
    tensor = {"name": "image_bytes", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(blob)}}
    header = json.dumps({"inputs": [tensor]}).encode()
    body = bytearray(header + blob)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body) - 1))
        if data.draw(st.booleans()):
            body[at] ^= 1 << data.draw(st.integers(0, 7))
        else:
            del body[at:]
            if not body:
                break
    response = hostile_client.post(INFER, content=bytes(body), headers={HEADER_LENGTH: str(len(header))})
    assert_protocol_answer(response)
