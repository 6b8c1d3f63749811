"""The gRPC door against a real `python -m service` on 127.0.0.1: Triton's own client (tritonclient.grpc, which
always sends raw tensors and reads raw outputs), the generated stub for typed `contents` (what KServe's client
sends for Python lists), the standard health service, the API key in metadata, and the same answers as REST.

KServe's own InferenceGRPCClient is not used: `kserve` 0.21 needs protobuf < 7 (this service's generated code
needs >= 7.35) and brings its own model server, pandas and the Kubernetes client; the generated stub sends the
same messages it does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from service.core.preprocessing import preprocess_bytes
from service.edge.grpc import grpc_predict_v2_pb2 as pb
from service.edge.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.model_factory import tiny_probability
from tests.reliability.conftest import Server, spawn_server
from tests.reliability.samples import valid_images
from tests.service.helpers import gray_png

pytestmark = pytest.mark.timeout(180)

MODEL = "tiny-test-model"
KEY = "grpc-test-key"
SAMPLES = valid_images()
FILES = [gray_png(level) for level in (15, 100, 180, 250)] + [SAMPLES[name] for name in sorted(SAMPLES)[:4]]


def started(server: Server) -> Iterator[Server]:
    try:
        server.wait_ready(timeout_s=90.0)
        yield server
    finally:
        assert server.terminate() == 0, server.log


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("grpc-server") / "server.log"
    yield from started(spawn_server(tiny_model_path, log, MAX_FILES=8))


@pytest.fixture(scope="module")
def keyed(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("grpc-keyed") / "server.log"
    yield from started(spawn_server(tiny_model_path, log, API_KEY=KEY))


@pytest.fixture
def triton(server: Server) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    yield client
    client.close()


@pytest.fixture
def stub(server: Server) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def image_input(files: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("image_bytes", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    return tensor


def test_the_client_sees_a_live_ready_server_and_the_models_metadata(
    triton: grpcclient.InferenceServerClient,
) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(MODEL)
    assert triton.is_model_ready(MODEL, "1")
    assert "binary_tensor_data" in triton.get_server_metadata().extensions
    metadata = triton.get_model_metadata(MODEL)
    assert list(metadata.versions) == ["1"]
    assert {(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs} == {
        ("image_bytes", "BYTES", (-1,)), ("input", "FP32", (-1, 100, 100, 1))
    }
    assert {(t.name, t.datatype) for t in metadata.outputs} == {("probability", "FP32"), ("label", "BYTES")}


@pytest.mark.parametrize(("name", "version"), [("another-model", ""), (MODEL, "7")])
def test_an_unknown_model_or_version_is_not_found(
    triton: grpcclient.InferenceServerClient, name: str, version: str
) -> None:
    for call in (triton.is_model_ready, triton.get_model_metadata):
        with pytest.raises(InferenceServerException, match=r"no model|no version") as info:
            call(name, version)
        assert info.value.status() == "StatusCode.NOT_FOUND"


def test_tritonclient_grpc_and_both_rest_doors_give_the_same_probabilities_for_the_same_files(
    server: Server, triton: grpcclient.InferenceServerClient
) -> None:
    result = triton.infer(MODEL, [image_input(FILES)], request_id="cells")
    over_grpc = result.as_numpy("probability")
    assert over_grpc.dtype == np.float32
    assert over_grpc.shape == (len(FILES), 1)
    assert result.get_response().id == "cells"
    with httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}") as rest:
        tensor = httpclient.InferInput("image_bytes", [len(FILES)], "BYTES")
        tensor.set_data_from_numpy(np.array(FILES, dtype=np.object_), binary_data=True)
        over_v2 = rest.infer(MODEL, [tensor]).as_numpy("probability")
    uploads = [("files", (f"{i}.img", data, "application/octet-stream")) for i, data in enumerate(FILES)]
    predicted = httpx.post(f"{server.base_url}/predict", files=uploads, timeout=30.0).json()["predictions"]
    assert over_grpc[:, 0].tolist() == over_v2[:, 0].tolist()  # the same float32 values, bit for bit
    assert over_grpc[:, 0].tolist() == pytest.approx([p["probability"] for p in predicted], abs=1e-6)
    labels = [label.decode() for label in result.as_numpy("label")]
    assert labels == [p["label"] for p in predicted]


def test_raw_pixels_give_the_models_own_probabilities(triton: grpcclient.InferenceServerClient) -> None:
    pixels = np.stack([preprocess_bytes(data) for data in FILES[:3]])
    tensor = grpcclient.InferInput("input", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    result = triton.infer(MODEL, [tensor], outputs=[grpcclient.InferRequestedOutput("probability")])
    assert result.as_numpy("probability")[:, 0].tolist() == pytest.approx(tiny_probability(pixels).tolist(), abs=1e-6)
    assert result.as_numpy("label") is None


def test_typed_contents_in_give_typed_contents_out(
    stub: pb_grpc.GRPCInferenceServiceStub, triton: grpcclient.InferenceServerClient
) -> None:
    request = pb.ModelInferRequest(model_name=MODEL, model_version="1", id="typed")
    request.inputs.add(name="image_bytes", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(FILES[:2])
    response = stub.ModelInfer(request, timeout=30)
    assert not response.raw_output_contents
    probability, label = response.outputs
    raw = triton.infer(MODEL, [image_input(FILES[:2])]).as_numpy("probability")
    assert list(probability.contents.fp32_contents) == raw[:, 0].tolist()
    assert len(label.contents.bytes_contents) == 2
    pixels = preprocess_bytes(FILES[2])[np.newaxis]
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=[1, 100, 100, 1]).contents.fp32_contents.extend(
        pixels.ravel().tolist()
    )
    request.outputs.add(name="probability")
    (only,) = stub.ModelInfer(request, timeout=30).outputs
    assert list(only.contents.fp32_contents) == pytest.approx(tiny_probability(pixels).tolist(), abs=1e-6)


def test_each_prediction_id_is_in_the_prediction_log_for_feedback(
    server: Server, triton: grpcclient.InferenceServerClient
) -> None:
    response = triton.infer(MODEL, [image_input(FILES[:2])]).get_response()
    ids = response.parameters["ids"].string_param.split(",")
    assert len(ids) == 2
    assert len(set(ids)) == 2
    deadline = time.monotonic() + 10.0
    while True:  # the log's writer thread commits rows shortly after the answer
        answer = httpx.post(f"{server.base_url}/feedback", json={"id": ids[1], "label": "defective"}, timeout=10.0)
        if answer.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    assert answer.json()["verdicts"][0]["id"] == ids[1]


def test_the_health_service_answers_serving_for_the_server_and_the_protocol(server: Server) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        checks = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            status = checks.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            checks.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_calls_are_counted_by_method_and_code(server: Server, triton: grpcclient.InferenceServerClient) -> None:
    def count(code: str) -> float:
        text = httpx.get(f"{server.base_url}/metrics", timeout=10.0).text
        return sum(
            sample.value for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == "grpc_requests_total" and sample.labels == {"method": "ModelInfer", "code": code}
        )

    before_ok, before_bad = count("OK"), count("INVALID_ARGUMENT")
    triton.infer(MODEL, [image_input(FILES[:1])])
    with pytest.raises(InferenceServerException):
        triton.infer(MODEL, [image_input([b"not an image"])])
    assert (count("OK") - before_ok, count("INVALID_ARGUMENT") - before_bad) == (1, 1)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "StatusCode.UNAUTHENTICATED"),
        ({"x-api-key": "wrong"}, "StatusCode.UNAUTHENTICATED"),
        ({"x-api-key": KEY + "x"}, "StatusCode.UNAUTHENTICATED"),
        ({"x-api-key": KEY}, None),
    ],
    ids=["missing", "wrong", "longer", "right"],
)
def test_inference_needs_the_api_key_in_metadata_when_the_service_has_one(
    keyed: Server, headers: dict[str, str], code: str | None
) -> None:
    with grpcclient.InferenceServerClient(url=keyed.grpc_target) as client:
        assert client.is_server_ready()  # readiness and metadata need no key, as over HTTP
        assert client.get_model_metadata(MODEL).name == MODEL
        if code is None:
            result = client.infer(MODEL, [image_input(FILES[:1])], headers=headers)
            assert result.as_numpy("probability").shape == (1, 1)
            return
        with pytest.raises(InferenceServerException, match="x-api-key") as info:
            client.infer(MODEL, [image_input(FILES[:1])], headers=headers)
        assert info.value.status() == code
