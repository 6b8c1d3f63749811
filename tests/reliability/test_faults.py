"""Faults against a real `python -m service`: bad models at start-up, SIGTERM under load, clients that vanish,
many distinct images at once."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.servers import service_spec
from service.core.preprocessing import preprocess_bytes
from tests.conftest import image_bytes
from tests.model_factory import (
    build_onnx_failing_at_run_time,
    build_tiny_onnx,
    tiny_probability,
    write_tiny_metadata,
)
from tests.reliability.conftest import Server, spawn_server
from tests.reliability.samples import valid_images

pytestmark = pytest.mark.timeout(120)

PNG = valid_images()["png-gray"]


def multipart(data: bytes, boundary: str = "b0undary", name: str = "cell.png") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def request_head(body_length: int, boundary: str = "b0undary") -> bytes:
    return (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {body_length}\r\n\r\n"
    ).encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def read_all(sock: socket.socket, timeout_s: float = 15.0) -> bytes:
    sock.settimeout(timeout_s)
    received = b""
    while b"\r\n\r\n" not in received or len(received) < _expected_length(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _expected_length(response: bytes) -> int:
    head, _, _ = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":")[1])
    return len(response) + 1


def still_serves(server: Server) -> None:
    response = httpx.post(f"{server.base_url}/predict", files={"file": ("a.png", PNG, "image/png")}, timeout=10)
    assert response.status_code == 200, response.text


# ---- Start-up with a model that cannot be served ----


def _missing_file(directory: Path) -> Path:
    model = build_tiny_onnx(directory / "model.onnx")
    write_tiny_metadata(model)
    model.unlink()
    return model


def _truncated(directory: Path) -> Path:
    model = build_tiny_onnx(directory / "model.onnx")
    model.write_bytes(model.read_bytes()[:100])
    write_tiny_metadata(model)
    return model


def _wrong_input(directory: Path) -> Path:
    model = build_tiny_onnx(directory / "model.onnx", input_shape=("N", 64, 64, 3))
    write_tiny_metadata(model)
    return model


def _wrong_output(directory: Path) -> Path:
    model = build_tiny_onnx(directory / "model.onnx", output_width=2)
    write_tiny_metadata(model)
    return model


def _missing_metadata(directory: Path) -> Path:
    return build_tiny_onnx(directory / "model.onnx")


def _other_models_metadata(directory: Path) -> Path:
    model = build_tiny_onnx(directory / "model.onnx")
    write_tiny_metadata(model, sha256="0" * 64)
    return model


@pytest.mark.parametrize(
    ("make_model", "message"),
    [
        pytest.param(_missing_file, r"model file .*model\.onnx does not exist", id="missing"),
        pytest.param(_truncated, r"model file .*model\.onnx is not a loadable ONNX model", id="truncated"),
        pytest.param(_wrong_input, r"takes float32 \[\?, 64, 64, 3\]; the service needs", id="wrong-input"),
        pytest.param(
            _wrong_output, r"returns float32 \[\?, 2\]; expected float32 \(N, 1\)", id="wrong-output"
        ),
        pytest.param(_missing_metadata, r"model metadata .*model\.json does not exist", id="no-metadata"),
        pytest.param(_other_models_metadata, r"does not match its metadata", id="sha256-mismatch"),
    ],
)
def test_a_model_that_cannot_be_served_stops_start_up_with_one_clear_line(
    tmp_path: Path, make_model: Callable[[Path], Path], message: str
) -> None:
    server = spawn_server(make_model(tmp_path), tmp_path / "server.log")
    exit_code = server.process.wait(timeout=60)
    log = server.log
    assert exit_code == 1
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1, log
    assert lines[0].startswith("cannot start: ")
    assert re.search(message, lines[0]), lines[0]


def _fails_when_run(directory: Path) -> Path:
    model = build_onnx_failing_at_run_time(directory / "model.onnx")
    write_tiny_metadata(model)
    return model


def _top_level_sha256_wrong_variants_right(directory: Path) -> Path:
    """The issue's case: only the chosen variant's hash used to be checked, so this card was served."""
    model = build_tiny_onnx(directory / "model.onnx")
    right = hashlib.sha256(model.read_bytes()).hexdigest()
    variant = {"engine": "onnxruntime", "precision": "fp32", "file": "model.onnx", "sha256": right, "accuracy": 1.0}
    write_tiny_metadata(model, sha256="0" * 64, variants=[variant])
    return model


@pytest.mark.parametrize(
    ("make_model", "settings", "message"),
    [
        pytest.param(
            _fails_when_run, {"ENGINE": "onnxruntime"},
            r"model file .*model\.onnx fails when run \(warm-up\): Fail: .*Reshape", id="fails-at-warm-up",
        ),
        pytest.param(
            _fails_when_run, {"ENGINE": "openvino"}, r"model file .*model\.onnx cannot be compiled by OpenVINO",
            id="openvino-refuses-it",
        ),
        pytest.param(
            _top_level_sha256_wrong_variants_right, {"ENGINE": "onnxruntime"},
            r"model file .*model\.onnx does not match its metadata .*model\.json \(sha256 differs\)",
            id="top-level-sha256-wrong",
        ),
        pytest.param(
            lambda d: build_tiny_onnx(d / "model.onnx"), {"MAX_BATCH_SIZE": "zero"},
            r"invalid setting MAX_BATCH_SIZE: Input should be a valid integer", id="invalid-setting",
        ),
    ],
)
def test_every_start_up_failure_is_one_line_and_exit_1(
    tmp_path: Path, make_model: Callable[[Path], Path], settings: dict[str, str], message: str
) -> None:
    model = make_model(tmp_path)
    if not model.with_suffix(".json").exists():
        write_tiny_metadata(model)
    server = spawn_server(model, tmp_path / "server.log", **settings)
    assert server.process.wait(timeout=60) == 1
    lines = [line for line in server.log.splitlines() if line.strip()]
    assert len(lines) == 1, server.log
    assert lines[0].startswith("cannot start: ")
    assert re.search(message, lines[0]), lines[0]


def test_a_port_in_use_is_one_line_and_exit_1_before_the_model_loads(tiny_model_path: Path, tmp_path: Path) -> None:
    spec = service_spec("server", tiny_model_path, {"LOG_LEVEL": "info"})
    server = Server(spec, tmp_path, ready_timeout_s=60.0)
    with socket.create_server(("127.0.0.1", server.port)):
        server.spawn()
        assert server.process.wait(timeout=60) == 1
    lines = [line for line in server.log.splitlines() if line.strip()]
    assert len(lines) == 1, server.log
    assert re.fullmatch(r"cannot start: cannot listen on 127\.0\.0\.1:\d+: Address already in use .*", lines[0])


# ---- SIGTERM while requests are in flight ----


def test_sigterm_lets_in_flight_requests_finish_refuses_new_connections_and_exits_0(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(GRACEFUL_SHUTDOWN_S=10)
    body = multipart(PNG)
    half = len(body) // 2
    in_flight = []
    for _ in range(6):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(request_head(len(body)) + body[:half])
        in_flight.append(sock)
    # Requests from a busy client too, up to the moment of the signal and after it.
    stop = time.monotonic() + 3.0
    answers: list[int | str] = []

    def hammer() -> None:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            while time.monotonic() < stop:
                try:
                    answers.append(client.post("/predict", files={"file": ("a.png", PNG, "image/png")}).status_code)
                except httpx.TransportError as exc:
                    answers.append(type(exc).__name__)
                    time.sleep(0.05)

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(hammer)
        time.sleep(1.0)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        for sock in in_flight:
            sock.sendall(body[half:])
        responses = [read_all(sock) for sock in in_flight]
        for sock in in_flight:
            sock.close()
    exit_code = server.process.wait(timeout=60)
    assert [status_of(r) for r in responses] == [200] * len(in_flight), responses
    assert exit_code == 0
    # Every admitted request finished within GRACEFUL_SHUTDOWN_S: uvicorn did not have to cancel any.
    assert "timeout graceful shutdown exceeded" not in server.log
    assert "Finished server process" in server.log
    assert 200 in answers
    assert not [a for a in answers if isinstance(a, int) and a != 200], answers
    assert "Traceback" not in server.log
    assert "stopped after answering every admitted request" in server.log


def test_a_client_that_never_finishes_its_upload_cannot_hold_shutdown_hostage(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(GRACEFUL_SHUTDOWN_S=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head(100_000) + b"--b0undary\r\n")
        time.sleep(0.3)
        signalled = time.monotonic()
        exit_code = server.terminate(timeout_s=60)
        stopped_after = time.monotonic() - signalled
    assert exit_code == 0
    # One second of grace, then uvicorn cancels the request. Without that it would wait for the client
    # forever; the margin is for interpreter exit on a CPU shared with a training job.
    assert stopped_after < 25, stopped_after
    assert "timeout graceful shutdown exceeded" in server.log


# ---- Clients that disconnect ----


def test_clients_that_disconnect_mid_upload_leave_no_tracebacks_and_the_server_serves_on(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    body = multipart(PNG)
    for cut in (0, 10, len(body) // 2, len(body) - 1):
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(request_head(len(body)) + body[:cut])
            # A raw body too, read with request.body() rather than the multipart parser.
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                    + f"Content-Length: {len(PNG)}\r\n\r\n".encode()
                    + PNG[: cut % len(PNG)]
                )
    time.sleep(0.5)
    still_serves(server)
    assert "Traceback" not in server.log
    assert "ERROR" not in server.log


def test_clients_that_disconnect_while_their_images_wait_for_inference_leave_no_tracebacks(
    start_server: Callable[..., Server],
) -> None:
    # Every batch waits 300 ms for company, so the clients below leave while their image is queued.
    server = start_server(MAX_BATCH_WAIT_S=0.3, MAX_BATCH_SIZE=64)
    body = multipart(PNG)
    sockets = []
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(request_head(len(body)) + body)
        sockets.append(sock)
    time.sleep(0.1)
    for sock in sockets:
        # RST rather than FIN, as a killed client does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    time.sleep(0.8)
    still_serves(server)
    assert "Traceback" not in server.log
    assert "ERROR" not in server.log


# ---- Many distinct images at once ----


def test_concurrent_requests_each_get_their_own_images_result(start_server: Callable[..., Server]) -> None:
    server = start_server(MAX_BATCH_SIZE=8, MAX_BATCH_WAIT_S=0.005, MAX_FILES=3)
    rng = np.random.default_rng(7)
    images = [
        image_bytes(Image.fromarray(np.full((40, 40), level, np.uint8)), "PNG")
        for level in rng.permutation(np.linspace(0, 255, 96).astype(np.uint8))
    ]
    expected = {
        f"img-{i}.png": float(tiny_probability(preprocess_bytes(data)[None])[0]) for i, data in enumerate(images)
    }

    async def send_all() -> tuple[int, list[httpx.Response]]:
        limits = httpx.Limits(max_connections=48)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:
            requests, sent = [], 0
            for start in range(0, len(images), 3):
                # Mixed: some requests carry one image, some three.
                chunk = range(start, start + 3) if start % 2 else range(start, start + 1)
                files = [("files", (f"img-{i}.png", images[i], "image/png")) for i in chunk]
                requests.append(client.post("/predict", files=files))
                sent += len(files)
            return sent, await asyncio.gather(*requests)

    sent, responses = asyncio.run(send_all())
    seen = 0
    for response in responses:
        assert response.status_code == 200, response.text
        for prediction in response.json()["predictions"]:
            assert prediction["probability"] == pytest.approx(expected[prediction["filename"]], abs=1e-5)
            seen += 1
    assert seen == sent
    metrics = httpx.get(f"{server.base_url}/metrics").text
    batches = _metric(metrics, "inference_batch_size_count")
    assert _metric(metrics, "inference_batch_size_sum") > batches, "no batch held more than one image"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
