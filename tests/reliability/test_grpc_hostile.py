"""The gRPC door under hostile calls against a real `python -m service`: every bad request is answered with the
documented code (never UNKNOWN or INTERNAL), cancelled and expired calls and 1,000 dropped streams leave the
service alive, ready and within its memory budget, and SIGTERM drains the gRPC and HTTP calls in flight."""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.edge.grpc import grpc_predict_v2_pb2 as pb
from service.edge.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.reliability.conftest import HOSTILE_LIMITS, Server, spawn_server
from tests.reliability.samples import valid_images

pytestmark = pytest.mark.timeout(180)

MODEL = "tiny-test-model"
MAX_FILES = HOSTILE_LIMITS["max_files"]
MAX_FILE_BYTES = HOSTILE_LIMITS["max_file_bytes"]
PNG = valid_images()["png-gray"]
PIXELS = [1, 100, 100, 1]
DECODE_BUDGET_BYTES = 256 * 1024 * 1024
Code = grpc.StatusCode


def slow_png(side: int = 4000) -> bytes:
    """A gray PNG of side x side pixels: at 4000 (16 MP, 24 KB) ~0.2 s to decode, so a call with a few is still
    running when acted on; at 6000 (36 MP, 48 KB) ~0.5-1.5 s, for the tests where one call must outlast a
    deadline or the next call on an idle machine too."""
    out = io.BytesIO()
    Image.new("L", (side, side), 120).save(out, "PNG")
    return out.getvalue()


SLOW = slow_png()
SLOWER = slow_png(6000)


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("grpc-hostile") / "server.log"
    server = spawn_server(tiny_model_path, log, DECODE_MEMORY_BUDGET_BYTES=DECODE_BUDGET_BYTES, **HOSTILE_LIMITS)
    try:
        server.wait_ready(timeout_s=90.0)
        yield server
    finally:
        assert server.terminate() == 0, server.log


@pytest.fixture
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def infer(name: str = "image_bytes", datatype: str = "BYTES", shape: list[int] | None = None, *,
          raw: list[bytes] | None = None, model: str = MODEL, version: str = "", outputs: tuple[str, ...] = (),
          **contents: list[object]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version, raw_input_contents=raw or [])
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape if shape is not None else [1])
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    for output in outputs:
        request.outputs.add(name=output)
    return request


def assert_serving(server: Server) -> None:
    """Alive and ready on both doors, and a good call still answered."""
    assert server.process.poll() is None, server.log
    assert httpx.get(f"{server.base_url}/readyz", timeout=10.0).status_code == 200
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        answer = stub.ModelInfer(infer(raw=[length_prefixed(PNG)]), timeout=30)
        assert len(answer.raw_output_contents) == 2
    assert "Traceback" not in server.log, server.log


HOSTILE = [
    pytest.param(infer(raw=[length_prefixed(b"x" * (300 * 1024))]), Code.RESOURCE_EXHAUSTED, "larger than max",
                 id="message-over-the-size-limit"),
    pytest.param(infer(raw=[length_prefixed(b"x" * (MAX_FILE_BYTES + 1))]), Code.RESOURCE_EXHAUSTED, "MAX_FILE_BYTES",
                 id="element-over-max-file-bytes"),
    pytest.param(infer(bytes_contents=[b"x" * (MAX_FILE_BYTES + 1)]), Code.RESOURCE_EXHAUSTED, "MAX_FILE_BYTES",
                 id="typed-element-over-max-file-bytes"),
    pytest.param(infer(shape=[2], raw=[length_prefixed(PNG)]), Code.INVALID_ARGUMENT, "holds 1 elements",
                 id="shape-says-2-raw-holds-1"),
    pytest.param(infer(shape=[1], bytes_contents=[PNG, PNG]), Code.INVALID_ARGUMENT, "contents hold 2",
                 id="shape-says-1-contents-hold-2"),
    pytest.param(infer("input", "FP32", PIXELS, raw=[b"\x00" * 12]), Code.INVALID_ARGUMENT, "40000 bytes",
                 id="fp32-shape-against-raw-length"),
    pytest.param(infer("input", "FP32", [2, 100, 100, 1], fp32_contents=[1.0] * 10_000), Code.INVALID_ARGUMENT,
                 "20000 values", id="fp32-shape-against-contents"),
    pytest.param(infer(raw=[length_prefixed(PNG)], bytes_contents=[PNG]), Code.INVALID_ARGUMENT,
                 "both in contents and in raw_input_contents", id="contents-and-raw-together"),
    pytest.param(infer("image_bytes", "FP32", fp32_contents=[1.0]), Code.INVALID_ARGUMENT, "must be BYTES",
                 id="image-bytes-as-fp32"),
    pytest.param(infer("input", "UINT8", PIXELS, raw=[b"\x00" * 10_000]), Code.INVALID_ARGUMENT, "must be FP32",
                 id="pixels-as-uint8"),
    pytest.param(infer("input", "", PIXELS), Code.INVALID_ARGUMENT, "must be FP32", id="no-datatype"),
    pytest.param(infer("input", "FP32", PIXELS, int_contents=[1] * 10_000), Code.INVALID_ARGUMENT,
                 "not int_contents", id="fp32-in-int-contents"),
    pytest.param(infer(bytes_contents=[PNG], fp32_contents=[1.0]), Code.INVALID_ARGUMENT, "not fp32_contents",
                 id="bytes-with-fp32-contents"),
    pytest.param(infer("input", "FP32", PIXELS, fp32_contents=[float("nan")] * 10_000), Code.INVALID_ARGUMENT,
                 "between 0 and 255", id="nan-pixels"),
    pytest.param(infer(raw=[struct.pack("<I", 100) + b"ab"]), Code.INVALID_ARGUMENT, "declares 100 bytes",
                 id="length-prefix-overrun"),
    pytest.param(infer(shape=[MAX_FILES + 1], raw=[length_prefixed(*[PNG] * (MAX_FILES + 1))]),
                 Code.INVALID_ARGUMENT, "MAX_FILES", id="more-images-than-max-files"),
    pytest.param(infer(shape=[2**62], raw=[length_prefixed(PNG)]), Code.INVALID_ARGUMENT, "MAX_FILES",
                 id="huge-batch"),
    pytest.param(infer(shape=[-1], raw=[length_prefixed(PNG)]), Code.INVALID_ARGUMENT, "at least one image",
                 id="negative-batch"),
    pytest.param(infer(raw=[length_prefixed(PNG)] * 2), Code.INVALID_ARGUMENT, "one entry per input",
                 id="two-raw-entries"),
    pytest.param(infer("nope", raw=[b""]), Code.INVALID_ARGUMENT, "no input 'nope'", id="unknown-input"),
    pytest.param(infer(), Code.INVALID_ARGUMENT, "has no data", id="no-data"),
    pytest.param(infer(raw=[length_prefixed(PNG)], outputs=("scores",)), Code.INVALID_ARGUMENT, "no output",
                 id="unknown-output"),
    pytest.param(infer(raw=[length_prefixed(b"not an image")]), Code.INVALID_ARGUMENT, r"image_bytes\[0\]",
                 id="undecodable-image"),
    pytest.param(infer(raw=[length_prefixed(PNG)], model="other"), Code.NOT_FOUND, "no model 'other'",
                 id="unknown-model"),
    pytest.param(infer(raw=[length_prefixed(PNG)], version="9"), Code.NOT_FOUND, "no version '9'",
                 id="unknown-version"),
    pytest.param(b"\x0a\xff\xff\xff\xff\x0f", Code.INVALID_ARGUMENT, "not a valid protobuf message",
                 id="bytes-that-are-no-message"),
]


@pytest.mark.parametrize(("request_", "code", "match"), HOSTILE)
def test_each_hostile_request_gets_its_documented_code(
    channel: grpc.Channel, request_: pb.ModelInferRequest | bytes, code: grpc.StatusCode, match: str
) -> None:
    # Sent as bytes, so the client's own checks and serializer cannot stop a message on the way.
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    data = request_ if isinstance(request_, bytes) else request_.SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        call(data, timeout=30)
    assert info.value.code() == code, info.value.details()
    assert info.value.code() not in (Code.UNKNOWN, Code.INTERNAL)
    assert re.search(match, info.value.details() or ""), info.value.details()


def test_a_busy_answer_is_unavailable_with_a_retry_hint(tiny_model_path: Path, tmp_path: Path) -> None:
    """One image admitted at a time: while one call decodes, the next is refused by admission (UNAVAILABLE, with
    retry-after). The direct path admits an image before its decode (the batched one after it), so the refusal
    does not race the decode."""
    server = spawn_server(
        tiny_model_path, tmp_path / "busy.log", MAX_QUEUE_IMAGES=1, MAX_FILES=1, REQUEST_PATH="direct"
    )
    try:
        server.wait_ready(timeout_s=90.0)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            slow = stub.ModelInfer.future(infer(raw=[length_prefixed(SLOWER)]), timeout=30)
            time.sleep(0.1)
            with pytest.raises(grpc.RpcError) as busy:
                stub.ModelInfer(infer(raw=[length_prefixed(PNG)]), timeout=30)
            assert slow.result().outputs
        assert busy.value.code() == Code.UNAVAILABLE, busy.value.details()
        assert dict(busy.value.trailing_metadata())["retry-after"] == "1"
        assert "busy" in busy.value.details()
        assert_serving(server)
    finally:
        assert server.terminate() == 0, server.log


def test_cancelled_calls_leave_the_service_serving(server: Server, channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    calls = [stub.ModelInfer.future(infer(shape=[2], raw=[length_prefixed(SLOW, SLOW)]), timeout=30)
             for _ in range(20)]
    time.sleep(0.2)
    for call in calls:
        call.cancel()
    ended: list[str] = []
    for call in calls:
        try:
            call.result()
            ended.append("answered")
        except grpc.FutureCancelledError:
            ended.append("cancelled")
        except grpc.RpcError as exc:  # refused before the cancel: the decode budget or admission was full
            ended.append(exc.code().name)
    # Which calls finished or were refused before the cancel depends on the machine's speed; some are cancelled.
    assert "cancelled" in ended, ended
    assert set(ended) <= {"cancelled", "answered", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}, ended
    assert_serving(server)


@pytest.mark.parametrize("timeout_s", [0.0, 0.05, 0.3])
def test_an_expired_deadline_is_deadline_exceeded(server: Server, channel: grpc.Channel, timeout_s: float) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(infer(shape=[3], raw=[length_prefixed(SLOWER, SLOWER, SLOWER)]), timeout=timeout_s)
    assert info.value.code() == Code.DEADLINE_EXCEEDED
    assert_serving(server)


def rss_sampler(server: Server, stop: threading.Event, peaks: list[float]) -> None:
    while not stop.is_set():
        rss = server.rss_mib()
        if rss is not None:
            peaks.append(rss)
        time.sleep(0.02)


def server_codes(server: Server) -> dict[str, float]:
    """grpc_requests_total{method="ModelInfer"} by code, as the server counted its calls."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10.0).text
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
        if sample.name == "grpc_requests_total" and sample.labels["method"] == "ModelInfer" and sample.value
    }


def test_a_thousand_streams_opened_and_dropped_leave_the_service_serving_within_its_budget(server: Server) -> None:
    assert_serving(server)
    before, counted_before = server.rss_mib(), server_codes(server)
    assert before is not None
    peaks: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=rss_sampler, args=(server, stop, peaks))
    sampler.start()
    codes: dict[str, int] = {}

    async def storm() -> None:
        request = infer(raw=[length_prefixed(SLOW)])  # each call decodes 16 MP: many are still running when dropped
        channels = [grpc.aio.insecure_channel(server.grpc_target) for _ in range(10)]
        stubs = [pb_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
        calls = [stubs[i % len(stubs)].ModelInfer(request, timeout=30) for i in range(1000)]
        await asyncio.sleep(1.0)
        for channel in channels:  # drops every stream still open, as a client that vanishes does
            await channel.close(grace=None)
        for call in calls:
            try:
                await call
                code = Code.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            except asyncio.CancelledError:
                code = Code.CANCELLED
            codes[code.name] = codes.get(code.name, 0) + 1

    try:
        asyncio.run(storm())
    finally:
        stop.set()
        sampler.join()
    assert sum(codes.values()) == 1000
    # Answered, refused by admission or by the call limit, or dropped by the client: never a server fault.
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "CANCELLED"}, codes
    assert_serving(server)
    counted = {code: n - counted_before.get(code, 0) for code, n in server_codes(server).items()}
    counted = {code: n for code, n in counted.items() if n}
    assert counted.get("CANCELLED", 0) > 0, f"no call was dropped while the server ran it: {counted}"
    assert set(counted) <= {"OK", "UNAVAILABLE", "CANCELLED"}, counted
    growth_mib = max(peaks) - before
    assert growth_mib * 1024 * 1024 < DECODE_BUDGET_BYTES, f"RSS grew {growth_mib:.0f} MiB: {codes}, {counted}"


def test_sigterm_drains_the_grpc_and_http_calls_in_flight_and_exits_0(tiny_model_path: Path, tmp_path: Path) -> None:
    server = spawn_server(tiny_model_path, tmp_path / "drain.log", GRACEFUL_SHUTDOWN_S=10, MAX_FILES=3)
    server.wait_ready(timeout_s=90.0)
    three_slow = [SLOW] * 3
    try:
        with grpc.insecure_channel(server.grpc_target) as channel, ThreadPoolExecutor(4) as pool:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            over_grpc = [stub.ModelInfer.future(infer(shape=[3], raw=[length_prefixed(*three_slow)]), timeout=30)
                         for _ in range(3)]
            over_http: list[Callable[[], httpx.Response]] = [
                pool.submit(
                    httpx.post, f"{server.base_url}/predict", timeout=30.0,
                    files=[("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(three_slow)],
                ).result
                for _ in range(2)
            ]
            time.sleep(0.4)  # every call sent and admitted; ~3 s of decoding queued on 2 threads
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(infer(raw=[length_prefixed(PNG)]), timeout=10)
            answers = [call.result() for call in over_grpc]
            responses = [result() for result in over_http]
        assert refused.value.code() == Code.UNAVAILABLE
        assert all(len(answer.raw_output_contents) == 2 for answer in answers)
        assert [response.status_code for response in responses] == [200, 200]
        assert server.process.wait(timeout=30) == 0, server.log
        log = server.log
        drained = log.index("gRPC stopped after answering its calls in flight")
        assert drained < log.index("Application shutdown complete")
        assert np.isfinite(np.frombuffer(answers[0].raw_output_contents[0], "<f4")).all()
    finally:
        server.kill()


def test_a_hot_reload_is_served_over_grpc_and_the_old_version_is_not_found(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    versions = tmp_path / "versions"
    for folder in (versions / "1", tmp_path / "later"):  # version 2 arrives after the start
        folder.mkdir(parents=True)
        shutil.copy(tiny_model_path, folder / "model.onnx")
        shutil.copy(tiny_model_path.with_suffix(".json"), folder / "model.json")
    server = spawn_server(tiny_model_path, tmp_path / "reload.log", MODEL_DIR=versions, API_KEY="k")
    try:
        server.wait_ready(timeout_s=90.0)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            key = (("x-api-key", "k"),)
            assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=10).versions) == ["1"]
            shutil.move(tmp_path / "later", versions / "2")
            reloaded = httpx.post(f"{server.base_url}/admin/reload", headers={"X-API-Key": "k"}, timeout=60.0)
            assert reloaded.status_code == 200, reloaded.text
            assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=10).versions) == ["2"]
            answer = stub.ModelInfer(infer(raw=[length_prefixed(PNG)], version="2"), metadata=key, timeout=30)
            assert answer.model_version == "2"
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(infer(raw=[length_prefixed(PNG)], version="1"), metadata=key, timeout=30)
        assert info.value.code() == Code.NOT_FOUND
        assert "serves version '2'" in (info.value.details() or "")
    finally:
        assert server.terminate() == 0, server.log
