"""/v2 (the Open Inference Protocol) in process: metadata, health, infer in JSON and binary, and every error."""

from __future__ import annotations

import base64
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.core.metrics import Metrics
from service.core.pipeline import Pipeline
from service.core.preprocessing import preprocess_bytes
from service.edge.app import create_app
from tests.model_factory import CLASS_NAMES, build_tiny_onnx, tiny_probability, write_tiny_metadata
from tests.service.helpers import (
    InferenceGate,
    expected_probability,
    gray_png,
    metric,
    png_claiming,
    refused_while_the_queue_is_full,
)

MODEL = "tiny-test-model"
INFER = f"/v2/models/{MODEL}/infer"
TIMEOUT_S = 30.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def images_json(*files: bytes, **request: object) -> dict[str, object]:
    tensor = {"name": "image_bytes", "datatype": "BYTES", "shape": [len(files)], "data": [b64(f) for f in files]}
    return {"inputs": [tensor], **request}


def binary_body(header: dict[str, object], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), {"Inference-Header-Content-Length": str(len(text))}


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def outputs_of(response_json: dict[str, object]) -> dict[str, list[object]]:
    return {o["name"]: o["data"] for o in response_json["outputs"]}  # type: ignore[index, union-attr]


def assert_error(response: object, status: int, match: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    assert match in body["error"], body


# ---- Server and model endpoints ----


def test_server_metadata_names_the_binary_extension(client: TestClient) -> None:
    body = client.get("/v2").json()
    assert body == {"name": "cell-classifier", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/health/live", {"live": True}),
        ("/v2/health/ready", {"ready": True}),
        (f"/v2/models/{MODEL}/ready", {"ready": True}),
        (f"/v2/models/{MODEL}/versions/1/ready", {"ready": True}),
    ],
)
def test_health_and_model_readiness_are_200_once_started(client: TestClient, path: str, body: object) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == body


@pytest.mark.parametrize("path", ["/v2/health/ready", f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}"])
def test_readiness_and_metadata_are_503_with_retry_after_before_the_model_is_loaded(
    tiny_model_path: Path, path: str
) -> None:
    client = TestClient(create_app(Settings(model_path=tiny_model_path, retry_after_s=4)))
    assert client.get("/v2/health/live").status_code == 200
    response = client.get(path)
    assert_error(response, 503, "not")
    assert response.headers["retry-after"] == "4"


def test_model_readiness_is_503_again_after_shutdown(tiny_model_path: Path) -> None:
    with TestClient(create_app(Settings(model_path=tiny_model_path))) as client:
        assert client.get(f"/v2/models/{MODEL}/ready").status_code == 200
    assert_error(client.get(f"/v2/models/{MODEL}/ready"), 503, "not ready")


@pytest.mark.parametrize("path", ["", "/versions/1"])
def test_model_metadata_declares_both_inputs_and_both_outputs(client: TestClient, path: str) -> None:
    engine = client.get("/model").json()["engine"]
    assert client.get(f"/v2/models/{MODEL}{path}").json() == {
        "name": MODEL,
        "versions": ["1"],
        "platform": {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino"}[engine],
        "inputs": [
            {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
            {"name": "input", "datatype": "FP32", "shape": [-1, 100, 100, 1]},
        ],
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }


def test_the_model_version_is_the_cards_version_field(tmp_path: Path) -> None:
    model_path = build_tiny_onnx(tmp_path / "model.onnx")
    write_tiny_metadata(model_path, name="cells", version="7")
    with TestClient(create_app(Settings(model_path=model_path))) as client:
        assert client.get("/v2/models/cells").json()["versions"] == ["7"]
        assert client.get("/v2/models/cells/versions/7/ready").status_code == 200
        assert_error(client.get("/v2/models/cells/versions/1"), 404, "it serves version '7'")
        response = client.post("/v2/models/cells/versions/7/infer", json=images_json(gray_png(5)))
        assert response.json()["model_version"] == "7"
        assert response.headers["X-Model-Version"] == "7"


def test_model_dir_versions_are_the_protocols_versions_and_follow_a_reload(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    def add_version(number: int) -> None:
        folder = tmp_path / "versions" / str(number)
        folder.mkdir(parents=True)
        shutil.copy(tiny_model_path, folder / "model.onnx")
        shutil.copy(tiny_model_path.with_suffix(".json"), folder / "model.json")

    add_version(2)
    key = {"X-API-Key": "admin-key"}
    settings = Settings(model_dir=tmp_path / "versions", api_key="admin-key")
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/v2/models/{MODEL}").json()["versions"] == ["2"]
        response = client.post(f"/v2/models/{MODEL}/versions/2/infer", json=images_json(gray_png(5)), headers=key)
        assert (response.json()["model_version"], response.headers["X-Model-Version"]) == ("2", "2")
        add_version(3)
        assert client.post("/admin/reload", headers=key).json()["serving"] == "3"
        assert_error(client.get(f"/v2/models/{MODEL}/versions/2/ready"), 404, "it serves version '3'")
        response = client.post(f"/v2/models/{MODEL}/versions/3/infer", json=images_json(gray_png(5)), headers=key)
        assert response.json()["model_version"] == "3"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/other"),
        ("GET", "/v2/models/other/ready"),
        ("GET", f"/v2/models/{MODEL}/versions/2"),
        ("GET", f"/v2/models/{MODEL}/versions/2/ready"),
        ("POST", "/v2/models/other/infer"),
        ("POST", f"/v2/models/{MODEL}/versions/2/infer"),
    ],
)
def test_an_unknown_model_or_version_is_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, json=images_json(gray_png(5)))
    assert_error(response, 404, "serves")


def test_a_model_name_longer_than_256_characters_is_400(client: TestClient) -> None:
    assert_error(client.get("/v2/models/" + "x" * 257), 400, "256")


# ---- Inference ----


def test_infer_in_json_answers_what_predict_answers_for_the_same_files(client: TestClient) -> None:
    files = [gray_png(level) for level in (20, 130, 240)]
    response = client.post(INFER, json=images_json(*files, id="req-1"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL, "1", "req-1")
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("probability", "FP32", [3, 1]),
        ("label", "BYTES", [3]),
    ]
    predicted = client.post("/predict", files=[("files", (f"{i}.png", f, "image/png")) for i, f in enumerate(files)])
    expected = predicted.json()["predictions"]
    got = outputs_of(body)
    assert got["probability"] == pytest.approx([p["probability"] for p in expected], abs=1e-6)
    assert got["label"] == [p["label"] for p in expected]


def test_infer_with_raw_pixels_runs_the_model_on_them_unchanged(client: TestClient) -> None:
    pixels = np.stack([preprocess_bytes(gray_png(level)) for level in (0, 255)])
    tensor = {"name": "input", "datatype": "FP32", "shape": list(pixels.shape), "data": pixels.ravel().tolist()}
    response = client.post(INFER, json={"inputs": [tensor]})
    assert response.status_code == 200, response.text
    got = outputs_of(response.json())
    assert got["probability"] == pytest.approx(tiny_probability(pixels).tolist(), abs=1e-6)
    assert got["label"] == [CLASS_NAMES[int(p >= 0.5)] for p in tiny_probability(pixels)]


def test_infer_in_binary_reads_length_prefixed_files_and_answers_in_binary(client: TestClient) -> None:
    files = [gray_png(40), gray_png(200)]
    blob = length_prefixed(*files)
    header = {
        "inputs": [
            {"name": "image_bytes", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(blob)}}
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, blob)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    outputs = json.loads(response.content[:length])["outputs"]
    sizes = [o["parameters"]["binary_data_size"] for o in outputs]
    data = response.content[length:]
    assert len(data) == sum(sizes)
    probabilities = np.frombuffer(data[: sizes[0]], "<f4")
    assert probabilities.tolist() == pytest.approx([expected_probability(f) for f in files], abs=1e-6)
    labels = [CLASS_NAMES[int(p >= 0.5)].encode() for p in probabilities]
    assert data[sizes[0] :] == length_prefixed(*labels)


def test_infer_answers_only_the_outputs_asked_for_each_in_its_own_encoding(client: TestClient) -> None:
    request = images_json(
        gray_png(9),
        outputs=[{"name": "label", "parameters": {"binary_data": True}}, {"name": "probability"}],
    )
    response = client.post(INFER, json=request)
    length = int(response.headers["inference-header-content-length"])
    outputs = json.loads(response.content[:length])["outputs"]
    assert [o["name"] for o in outputs] == ["label", "probability"]
    assert "data" not in outputs[0]
    assert outputs[1]["data"] == pytest.approx([expected_probability(gray_png(9))], abs=1e-6)
    label = CLASS_NAMES[int(expected_probability(gray_png(9)) >= 0.5)].encode()
    assert response.content[length:] == length_prefixed(label)


def test_infer_is_counted_by_route_in_metrics(client: TestClient) -> None:
    client.post(INFER, json=images_json(gray_png(1)))
    client.post(INFER, content=b"{")
    assert metric(client, "http_requests_total", route="/v2/models/{name}/infer", method="POST", status="200") == 1
    assert metric(client, "http_requests_total", route="/v2/models/{name}/infer", method="POST", status="400") == 1


# ---- Errors: always {"error": ...} with the protocol's status ----

PIXELS_ONE = [1, 100, 100, 1]


def pixels_json(values: list[float], shape: list[int] = PIXELS_ONE) -> dict[str, object]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": values}]}


@pytest.mark.parametrize(
    ("body", "headers", "match"),
    [
        pytest.param(b"{not json", {}, "not valid", id="bad-json"),
        pytest.param(b"", {}, "not valid", id="empty-body"),
        pytest.param(json.dumps({"inputs": [{"name": "image_bytes"}]}).encode(), {}, "inputs.0.shape", id="no-shape"),
        pytest.param(json.dumps(images_json(b"x") | {"outputs": [{"name": "p"}]}).encode(), {}, "no output 'p'",
                     id="unknown-output"),
        pytest.param(json.dumps({"inputs": [{"name": "image_bytes", "datatype": "FP32", "shape": [1], "data": [1]}]})
                     .encode(), {}, "must be BYTES", id="wrong-datatype"),
        pytest.param(json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2],
                                             "data": ["YQ=="]}]}).encode(), {}, "holds 1", id="shape-disagrees"),
        pytest.param(json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1]}]}).encode(), {},
                     "has no data", id="missing-data"),
        pytest.param(json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                                             "data": ["%%%"]}]}).encode(), {}, "not valid base64", id="bad-base64"),
        pytest.param(json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1],
                                             "data": []}]}).encode(), {}, "at least one", id="negative-shape"),
        pytest.param(json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [10**30],
                                             "data": []}]}).encode(), {}, "MAX_FILES", id="huge-shape"),
        pytest.param(json.dumps(pixels_json([float("nan")] * 10_000)).encode(), {}, "between 0 and 255",
                     id="nan-pixels"),
        pytest.param(json.dumps(pixels_json([256.0] * 10_000)).encode(), {}, "between 0 and 255", id="pixel-over-255"),
        pytest.param(b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, "the body has 14 bytes",
                     id="header-length-over-body"),
        pytest.param(b'{"inputs": []}', {"Inference-Header-Content-Length": "-1"}, "Inference-Header-Content-Length",
                     id="negative-header-length"),
        pytest.param(b'{"inputs": []}', {"Inference-Header-Content-Length": "ten"}, "Inference-Header-Content-Length",
                     id="header-length-not-a-number"),
        pytest.param(*binary_body({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                                               "parameters": {"binary_data_size": 99}}]}, b"\x00" * 8),
                     "only 8 bytes", id="binary-size-overruns-body"),
        pytest.param(json.dumps(images_json(b"")).encode(), {}, "image_bytes[0]", id="empty-image"),
        pytest.param(json.dumps(images_json(gray_png(1), b"garbage")).encode(), {}, "image_bytes[1]",
                     id="undecodable-image"),
    ],
)
def test_malformed_requests_get_400_with_an_error_message(
    client: TestClient, body: bytes, headers: dict[str, str], match: str
) -> None:
    assert_error(client.post(INFER, content=body, headers=headers), 400, match)


def _one_image(**changes: object) -> dict[str, object]:
    tensor = {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [b64(gray_png(1))], **changes}
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param(pixels_json([True] * 10_000), "not true or false", id="fp32-all-booleans"),
        pytest.param(pixels_json([1.0] * 9_999 + [False]), "not true or false", id="fp32-one-boolean"),
        pytest.param(pixels_json([[1.0] * 9_999 + [True]]), "not true or false", id="fp32-nested-boolean"),
        pytest.param(_one_image(shape=[True]), "inputs.0.shape.0: Input should be a valid integer", id="shape-true"),
        pytest.param(_one_image(shape=[1.0]), "inputs.0.shape.0: Input should be a valid integer", id="shape-float"),
        pytest.param(_one_image(shape=["1"]), "inputs.0.shape.0: Input should be a valid integer", id="shape-string"),
        pytest.param(_one_image(parameters={"binary_data_size": 1.0}), "binary_data_size", id="binary-size-float"),
        pytest.param(images_json(gray_png(1)) | {"outputs": [{"name": "label", "parameters": {"binary_data": 1}}]},
                     "binary_data: Input should be a valid boolean", id="binary-data-int"),
        pytest.param(images_json(gray_png(1)) | {"outputs": [{"name": "label"}] * 2000},
                     "output 'label' is requested more than once", id="duplicate-outputs"),
        pytest.param(images_json(gray_png(1)) | {"outputs": [{"name": "label"}, {"name": "probability"},
                                                           {"name": "label"}]},
                     "output 'label' is requested more than once", id="duplicate-output-later"),
    ],
)
def test_lenient_json_is_refused_with_400(client: TestClient, body: dict[str, object], match: str) -> None:
    assert_error(client.post(INFER, json=body), 400, match)


# Surrounding spaces are not among them: HTTP parsers strip a field value's optional whitespace (RFC 9110 5.5).
@pytest.mark.parametrize("value", ["14.0", "+14", "1_4", "0x0e", "-0", "14 bytes", "1" * 19, "\u0661\u0664"])
def test_a_header_length_not_in_ascii_digits_is_400(client: TestClient, value: str) -> None:
    sent = value.encode().decode("unicode_escape").encode()  # "١٤": Arabic-Indic digits, which int() reads as 14
    response = client.post(INFER, content=b'{"inputs": []}', headers={"Inference-Header-Content-Length": sent})
    assert_error(response, 400, "Inference-Header-Content-Length must be the JSON header's length in bytes, written "
                 "in ASCII digits")


def test_a_header_length_with_leading_zeros_is_still_digits(client: TestClient) -> None:
    body, headers = binary_body(
        {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                     "parameters": {"binary_data_size": len(length_prefixed(gray_png(1)))}}]},
        length_prefixed(gray_png(1)),
    )
    headers = {"Inference-Header-Content-Length": "000" + headers["Inference-Header-Content-Length"]}
    assert client.post(INFER, content=body, headers=headers).status_code == 200


MiB = 1024 * 1024


def test_a_json_body_whose_parse_would_exceed_the_decode_budget_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(DECODE_MEMORY_BUDGET_BYTES=64 * MiB)
    # 12 MB of one string: parsing it may take 6 bytes per byte (72 MB), more than the whole budget.
    body = json.dumps(_one_image(data=["A" * 12_000_000]))
    assert_error(
        client.post(INFER, content=body), 413, "needs an estimated 72 MB, more than the decode memory budget of 67 MB"
    )
    # 10 MB fits (60 MB): it is parsed, and refused for what it is.
    body = body.replace("A" * 12_000_000, "A" * 10_000_000)
    assert_error(client.post(INFER, content=body), 400, "image_bytes[0]': the bytes are not a decodable image")


def test_a_json_body_waits_for_decode_memory_like_an_image_and_gets_503_past_the_wait(
    tiny_model_path: Path,
) -> None:
    settings = Settings(model_path=tiny_model_path, decode_memory_budget_bytes=64 * MiB, decode_memory_wait_s=0.2)
    pipeline = Pipeline.load(settings, Metrics())
    with TestClient(create_app(settings, pipeline)) as client:
        assert pipeline.budget.try_acquire(60 * MiB)  # as if large decodes were running
        # 1.3 MB of base64: an estimated 8 MB to parse, more than the 4 MiB left.
        response = client.post(INFER, json=images_json(b"x" * 1_000_000))
        assert_error(response, 503, "decode memory is busy")
        assert response.headers["Retry-After"]
        pipeline.budget.release(60 * MiB)
        assert client.post(INFER, json=images_json(gray_png(1))).status_code == 200


def test_more_images_than_max_files_get_400(make_client: Callable[..., TestClient]) -> None:
    client = make_client(MAX_FILES=2)
    assert_error(client.post(INFER, json=images_json(*[gray_png(1)] * 3)), 400, "MAX_FILES")
    assert client.post(INFER, json=images_json(*[gray_png(1)] * 2)).status_code == 200


def test_an_image_over_max_file_bytes_gets_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(MAX_FILE_BYTES=1000)
    assert_error(client.post(INFER, json=images_json(gray_png(1), b"\x00" * 1001)), 413, "MAX_FILE_BYTES")


def test_an_image_declaring_too_many_pixels_gets_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(MAX_PIXELS=10_000)
    assert_error(client.post(INFER, json=images_json(png_claiming(200, 200))), 413, "image_bytes[0]")


def test_an_unsupported_image_format_gets_415(client: TestClient) -> None:
    assert_error(client.post(INFER, json=images_json(b"P5 2 2 255\n\x00\x01\x02\x03")), 415, "not supported")


def test_a_compressed_body_gets_415(client: TestClient) -> None:
    response = client.post(INFER, content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    assert_error(response, 415, "Content-Encoding gzip")


def test_a_streamed_body_over_max_body_bytes_gets_413_as_an_error(make_client: Callable[..., TestClient]) -> None:
    client = make_client(MAX_BODY_BYTES=4096)
    response = client.post(INFER, content=iter([b"{" + b" " * 8192]))
    assert_error(response, 413, "larger than 4096 bytes")


def test_infer_needs_the_api_key_when_one_is_set(make_client: Callable[..., TestClient]) -> None:
    client = make_client(API_KEY="s3cret")
    assert_error(client.post(INFER, json=images_json(gray_png(1))), 401, "X-API-Key")
    assert_error(client.post(INFER, json=images_json(gray_png(1)), headers={"X-API-Key": "wrong"}), 401, "X-API-Key")
    assert client.post(INFER, json=images_json(gray_png(1)), headers={"X-API-Key": "s3cret"}).status_code == 200
    # Metadata and health stay open, as /model and /readyz do.
    assert client.get(f"/v2/models/{MODEL}").status_code == 200


def test_infer_answers_503_with_retry_after_when_the_queue_is_full(
    make_client: Callable[..., TestClient], gate: InferenceGate
) -> None:
    client = make_client(MAX_QUEUE_IMAGES=1, RETRY_AFTER_S=5, REQUEST_PATH="batched")
    refused = refused_while_the_queue_is_full(
        client, gate, 1, lambda: client.post(INFER, json=images_json(gray_png(30)))
    )
    assert_error(refused, 503, "overloaded")
    assert refused.headers["retry-after"] == "5"


def test_openapi_lists_every_v2_endpoint_with_error_bodies_and_the_request_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = {path for path in schema["paths"] if path.startswith("/v2")}
    assert paths == {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }
    infer = schema["paths"]["/v2/models/{name}/infer"]["post"]
    for status in ("400", "401", "404", "408", "413", "415", "503"):
        error = infer["responses"][status]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/V2Error"}, status
    request_schema = infer["requestBody"]["content"]["application/json"]["schema"]
    assert set(request_schema["properties"]) == {"id", "parameters", "inputs", "outputs"}
    assert "$defs" not in json.dumps(request_schema)
    assert "application/octet-stream" in infer["requestBody"]["content"]
    assert {"application/json", "application/octet-stream"} <= set(infer["responses"]["200"]["content"])


def test_a_declared_body_over_the_limit_on_v2_is_a_protocol_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(MAX_BODY_BYTES=1000)
    response = client.post("/v2/models/tiny-test-model/infer", content=b"{" + b" " * 2000 + b"}")
    assert response.status_code == 413
    assert response.json() == {"error": "the request body is larger than 1000 bytes"}
