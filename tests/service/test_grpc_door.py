"""service.edge.grpc.door in process: the app's lifespan starts and stops it, its limits follow the settings,
and gRPC's own call limit answers RESOURCE_EXHAUSTED before reading a message."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient

from bench.servers import free_port
from service.core.config import Settings
from service.core.pipeline import Answer, EncodedImage, Pipeline
from service.edge.app import create_app
from service.edge.grpc import door
from service.edge.grpc import grpc_predict_v2_pb2 as pb
from service.edge.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.service.helpers import gray_png

pytestmark = pytest.mark.timeout(120)


def settings_for(model: Path, **overrides: object) -> Settings:
    return Settings(model_path=model, grpc_port=free_port(), prediction_log=False, **overrides)  # type: ignore[arg-type]


def test_the_message_limit_is_the_largest_valid_request_within_the_body_limit(tiny_model_path: Path) -> None:
    files = settings_for(tiny_model_path, max_files=2, max_file_bytes=100_000, max_body_bytes=10**9)
    assert door.max_message_bytes(files) == 2 * (100_000 + 4) + door.MESSAGE_OVERHEAD_BYTES
    # Files smaller than an image's FP32 pixels: MAX_FILES images of pixels still fit.
    pixels = settings_for(tiny_model_path, max_files=2, max_file_bytes=1000, max_body_bytes=10**9)
    assert door.max_message_bytes(pixels) == 2 * 40_000 + door.MESSAGE_OVERHEAD_BYTES
    assert door.max_message_bytes(settings_for(tiny_model_path)) == Settings().max_body_bytes  # 16 x 20 MiB > 64 MiB


def test_the_lifespan_serves_grpc_beside_http_and_stops_it(tiny_model_path: Path) -> None:
    settings = settings_for(tiny_model_path)
    grpc_door = door.GrpcDoor(settings)
    target = f"127.0.0.1:{settings.grpc_port}"
    with TestClient(create_app(settings, grpc_door=grpc_door)) as client:
        assert client.get("/readyz").status_code == 200
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_grpc_port_in_use_fails_the_start_up_naming_it(tiny_model_path: Path) -> None:
    settings = settings_for(tiny_model_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.grpc_port))
        taken.listen()
        with pytest.raises(OSError, match=rf"cannot listen for gRPC on 127.0.0.1:{settings.grpc_port}.*GRPC_PORT"), \
                TestClient(create_app(settings, grpc_door=door.GrpcDoor(settings))):
            pass


def test_calls_past_the_limit_are_resource_exhausted_before_their_message_is_read(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tiny_model_path, max_queue_images=1)
    assert door.max_calls(settings) == 2

    async def held(self: Pipeline, images: Sequence[EncodedImage], deadline: float) -> Answer:
        await asyncio.sleep(30)  # a call that runs until cancelled
        raise AssertionError("unreachable")

    monkeypatch.setattr(Pipeline, "answer", held)
    request = pb.ModelInferRequest(model_name="tiny-test-model")
    request.inputs.add(name="image_bytes", datatype="BYTES", shape=[1]).contents.bytes_contents.append(gray_png(9))
    with TestClient(create_app(settings, grpc_door=door.GrpcDoor(settings))), \
            grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        running = [stub.ModelInfer.future(request, timeout=30) for _ in range(2)]
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        for call in running:
            call.cancel()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Concurrent RPC limit" in (info.value.details() or "")
