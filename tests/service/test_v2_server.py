"""/v2 against a real `python -m service` on 127.0.0.1, driven by Triton's own client (tritonclient[http])."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from service.core.preprocessing import preprocess_bytes
from tests.model_factory import CLASS_NAMES, tiny_probability
from tests.reliability.conftest import Server, spawn_server
from tests.service.helpers import gray_png

pytestmark = pytest.mark.timeout(180)

MODEL = "tiny-test-model"
FILES = [gray_png(level) for level in (15, 100, 180, 250)]


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = spawn_server(tiny_model_path, tmp_path_factory.mktemp("v2-server") / "server.log", MAX_FILES=8)
    try:
        server.wait_ready(timeout_s=90.0)
        yield server
    finally:
        assert server.terminate() == 0, server.log


@pytest.fixture
def triton(server: Server) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=30.0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def predicted(server: Server) -> list[dict[str, object]]:
    """/predict's answer for FILES, from the same server."""
    uploads = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(FILES)]
    response = httpx.post(f"{server.base_url}/predict", files=uploads, timeout=30.0)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def image_input(files: list[bytes], *, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image_bytes", [len(files)], "BYTES")
    # JSON carries text, so there each file is base64; binary data carries the bytes themselves.
    elements = files if binary else [base64.b64encode(data) for data in files]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def test_the_client_sees_a_live_ready_server_and_the_models_metadata(
    triton: httpclient.InferenceServerClient,
) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(MODEL)
    assert triton.is_model_ready(MODEL, "1")
    assert not triton.is_model_ready("another-model")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    metadata = triton.get_model_metadata(MODEL)
    assert metadata["versions"] == ["1"]
    assert {(t["name"], t["datatype"]) for t in metadata["inputs"]} == {("image_bytes", "BYTES"), ("input", "FP32")}
    assert {(t["name"], t["datatype"]) for t in metadata["outputs"]} == {("probability", "FP32"), ("label", "BYTES")}


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True), (True, False), (False, True)])
def test_encoded_images_give_predicts_probabilities_and_labels(
    triton: httpclient.InferenceServerClient,
    predicted: list[dict[str, object]],
    binary_in: bool,
    binary_out: bool,
) -> None:
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in ("probability", "label")]
    result = triton.infer(
        MODEL, [image_input(FILES, binary=binary_in)], outputs=outputs, request_id=f"cells-{binary_in}-{binary_out}"
    )
    probabilities = result.as_numpy("probability")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (len(FILES), 1)
    assert probabilities[:, 0].tolist() == pytest.approx([p["probability"] for p in predicted], abs=1e-6)
    labels = [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label")]
    assert labels == [p["label"] for p in predicted]
    assert result.get_response()["id"] == f"cells-{binary_in}-{binary_out}"


def test_with_no_outputs_named_the_client_gets_every_output_in_binary(
    triton: httpclient.InferenceServerClient, predicted: list[dict[str, object]]
) -> None:
    result = triton.infer(MODEL, [image_input(FILES[:2], binary=True)], model_version="1")
    assert result.as_numpy("probability")[:, 0].tolist() == pytest.approx(
        [p["probability"] for p in predicted[:2]], abs=1e-6
    )
    assert all("data" not in output for output in result.get_response()["outputs"])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_raw_pixels_give_the_models_own_probabilities(triton: httpclient.InferenceServerClient, binary: bool) -> None:
    pixels = np.stack([preprocess_bytes(data) for data in FILES[:3]])
    tensor = httpclient.InferInput("input", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    result = triton.infer(MODEL, [tensor], outputs=[httpclient.InferRequestedOutput("probability", binary_data=binary)])
    assert result.as_numpy("probability")[:, 0].tolist() == pytest.approx(tiny_probability(pixels).tolist(), abs=1e-6)
    assert result.as_numpy("label") is None


def test_only_the_requested_output_comes_back(triton: httpclient.InferenceServerClient) -> None:
    label_only = [httpclient.InferRequestedOutput("label")]
    result = triton.infer(MODEL, [image_input(FILES[:1], binary=True)], outputs=label_only)
    assert result.as_numpy("probability") is None
    assert result.as_numpy("label").tolist()[0].decode() in CLASS_NAMES


@pytest.mark.parametrize(
    ("model", "tensor", "status", "message"),
    [
        ("other-model", "good", "404", "no model 'other-model'"),
        (MODEL, "fp32-out-of-range", "400", "between 0 and 255"),
        (MODEL, "garbage-file", "400", "image_bytes[0]"),
    ],
)
def test_errors_reach_the_client_as_its_exception_with_the_servers_message(
    triton: httpclient.InferenceServerClient, model: str, tensor: str, status: str, message: str
) -> None:
    if tensor == "fp32-out-of-range":
        data = httpclient.InferInput("input", [1, 100, 100, 1], "FP32")
        data.set_data_from_numpy(np.full((1, 100, 100, 1), 1000.0, np.float32))
    else:
        data = image_input([FILES[0] if tensor == "good" else b"not an image"], binary=True)
    with pytest.raises(InferenceServerException, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        triton.infer(model, [data])
    assert info.value.status() == status
