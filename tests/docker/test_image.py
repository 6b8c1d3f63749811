"""The Docker image, built from the repository and run the way a user runs it.

Needs a Docker engine (skipped when `docker info` gets no answer). DOCKER_BASE_IMAGE picks the base image
(default python:3.11-slim); DOCKER_BUILD_CONTEXT builds from another copy of the tree (default: this repository).
Not DOCKER_CONTEXT: the docker CLI reads that one as the name of the engine to talk to.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bench.servers import wait_until_ready
from service.core.config import Settings
from service.edge.app import create_app
from tests.model_factory import build_tiny_onnx, write_tiny_metadata

pytestmark = pytest.mark.docker

DOCKER = "/usr/bin/docker"
REPO = Path(__file__).resolve().parents[2]
CONTEXT = Path(os.environ.get("DOCKER_BUILD_CONTEXT") or REPO).resolve()
BASE_IMAGE = os.environ.get("DOCKER_BASE_IMAGE") or "python:3.11-slim"
TAG = "cell-classifier:pytest"
LABEL = "cell-classifier.pytest=1"
# docker reports decimal MB. Measured 571 MB on local/python:3.11-slim with OpenVINO (the openvino wheel unpacks
# to about 185 MB) beside onnxruntime, before the gRPC door (grpcio, protobuf and the health service: about
# 23 MB); 784 MB once SciPy (150 MB) and Granian (23 MB) came in too, which the image no longer carries: 618 MB
# with the gRPC door. The limit leaves about 5 % for a base image that grows.
MAX_IMAGE_BYTES = 650 * 1000 * 1000
BUILD_TIMEOUT_S = 1800  # a cold build downloads the dependencies
READY_TIMEOUT_S = 90
STOP_GRACE_S = 10  # docker stop's default before SIGKILL


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


@dataclass(frozen=True)
class Container:
    id: str
    url: str

    def logs(self) -> str:
        result = docker("logs", self.id, check=False)
        return result.stdout + result.stderr

    def state(self, field: str) -> str:
        return docker("inspect", "-f", f"{{{{.State.{field}}}}}", self.id).stdout.strip()

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.id, *command, check=False)

    def wait_ready(self) -> None:
        def exited() -> str | None:
            return None if self.state("Running") == "true" else f"the container exited with {self.state('ExitCode')}"

        why = wait_until_ready(self.url, exited, READY_TIMEOUT_S, interval_s=0.5)
        if why is not None:
            pytest.fail(f"{why}:\n{self.logs()}")

def run_container(*run_args: str) -> Container:
    """docker run -d with 8000 published on a free 127.0.0.1 port that the engine picks (no race)."""
    container_id = docker("run", "-d", "-p", "127.0.0.1::8000", *run_args, TAG).stdout.strip()
    port = docker("port", container_id, "8000/tcp", check=False)
    if port.returncode != 0:
        docker("rm", "--force", container_id, check=False)
        pytest.fail(f"docker port: {port.stderr}")
    return Container(container_id, f"http://{port.stdout.split()[0]}")  # 127.0.0.1:PORT


@pytest.fixture(scope="module")
def engine() -> None:
    try:
        answered = subprocess.run([DOCKER, "info"], capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        answered = False
    if not answered:
        pytest.skip(f"no Docker engine answers {DOCKER} info")


@pytest.fixture(scope="module")
def default_model(engine: None) -> Path:
    model = CONTEXT / "models" / "model.onnx"
    missing = [path.name for path in (model, model.with_suffix(".json")) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing from {model.parent}: the image ships the default model, "
            "so train it first (make train) or set DOCKER_BUILD_CONTEXT to a tree that has one"
        )
    return model


@pytest.fixture(scope="module")
def image(default_model: Path) -> Iterator[str]:
    """The image, built like the README says; kept by tag so a rerun reuses its layers."""
    command = [DOCKER, "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    command += ["--label", LABEL, "-t", TAG, str(CONTEXT)]
    build = subprocess.run(
        command,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"docker build failed ({build.returncode}):\n{(build.stdout + build.stderr)[-6000:]}")
    yield TAG
    # Earlier builds of this tag, left untagged by this one.
    docker("image", "prune", "--force", "--filter", f"label={LABEL}", check=False)


@pytest.fixture(scope="module")
def served(image: str) -> Iterator[Container]:
    """The image as shipped: default model, default settings."""
    container = run_container()
    try:
        container.wait_ready()
        yield container
    finally:
        docker("rm", "--force", container.id, check=False)


@pytest.fixture(scope="module")
def in_process(default_model: Path) -> Iterator[TestClient]:
    """The same service in this process, over the same model file the image was built with."""
    # Default settings on both sides: ENGINE=auto and PRECISION=auto choose the same variant on the same CPU.
    with TestClient(create_app(Settings(model_path=default_model))) as client:
        yield client


@pytest.fixture(scope="module")
def mounted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's own model in a directory the container's non-root user can read."""
    directory = tmp_path_factory.mktemp("mounted-model")
    model = build_tiny_onnx(directory / "model.onnx")
    write_tiny_metadata(model)
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
    return model


def sample_png() -> bytes:
    # A dark cell with a bright diagonal crack, 300x300, so the model resizes it.
    pixels = np.full((300, 300), 60, np.uint8)
    for offset in range(-3, 4):
        pixels[np.arange(300), np.clip(np.arange(300) + offset, 0, 299)] = 230
    return image_bytes(Image.fromarray(pixels, "L"), "PNG")


def sample_jpeg() -> bytes:
    # RGB noise: exercises the greyscale conversion and the JPEG decoder.
    pixels = np.random.default_rng(7).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return image_bytes(Image.fromarray(pixels, "RGB"), "JPEG", quality=90)


def image_bytes(image: Image.Image, fmt: str, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


SAMPLES = {"cell.png": (sample_png, "image/png"), "cell.jpg": (sample_jpeg, "image/jpeg")}


def predict(client: httpx.Client | TestClient, url: str, filename: str) -> dict:
    make, media_type = SAMPLES[filename]
    response = client.post(url, files={"file": (filename, make(), media_type)})
    assert response.status_code == 200, response.text
    return response.json()


def assert_same_answer(got: dict, expected: dict) -> None:
    assert got["model"] == expected["model"]
    assert got["threshold"] == expected["threshold"]
    assert len(got["predictions"]) == len(expected["predictions"]) == 1
    for mine, theirs in zip(got["predictions"], expected["predictions"], strict=True):
        assert mine["filename"] == theirs["filename"]
        assert mine["label"] == theirs["label"]
        # Same model and engine; threads may still reorder float sums in the last bits.
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-6)
        assert mine["scores"] == pytest.approx(theirs["scores"], abs=1e-6)


def test_image_is_under_its_size_limit(image: str) -> None:
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    assert size < MAX_IMAGE_BYTES, f"{image} is {size / 1e6:.0f} MB"


def test_image_holds_only_the_service_and_the_default_model(served: Container) -> None:
    paths = set(served.exec("find", "/app", "-maxdepth", "2", "-not", "-path", "/app/service/*").stdout.split())
    plots = {path for path in paths if path.startswith("/app/models/") and path.endswith(".png")}
    assert paths - plots == {
        "/app", "/app/service", "/app/models", "/app/models/model.onnx", "/app/models/model.json",
        "/app/models/model.int8.onnx",
    }
    assert served.exec("python", "-c", "import service, openvino, onnxruntime, uvicorn").returncode == 0


def test_container_reports_healthy(served: Container) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (status := served.state("Health.Status")) == "starting" and time.monotonic() < deadline:
        time.sleep(1)
    assert status == "healthy", served.state("Health.Log")


def test_readyz_answers_ready(served: Container) -> None:
    response = httpx.get(f"{served.url}/readyz", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


@pytest.mark.parametrize("filename", SAMPLES)
def test_predict_answers_like_the_in_process_service(served: Container, in_process: TestClient, filename: str) -> None:
    with httpx.Client(timeout=30) as client:
        got = predict(client, f"{served.url}/predict", filename)
    assert_same_answer(got, predict(in_process, "/predict", filename))


GRPC_CHECK = """
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service.edge.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc
with grpc.insecure_channel("127.0.0.1:8081") as channel:
    check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    ready = pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=5)
print(health_pb2.HealthCheckResponse.ServingStatus.Name(check.status), ready.ready)
"""


def test_the_image_exposes_and_serves_grpc_on_8081(image: str, served: Container) -> None:
    exposed = docker("image", "inspect", "-f", "{{json .Config.ExposedPorts}}", image).stdout
    assert '"8081/tcp"' in exposed
    assert '"8000/tcp"' in exposed
    result = served.exec("python", "-c", GRPC_CHECK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SERVING", "True"]


def test_container_runs_as_a_non_root_user(served: Container) -> None:
    uid = served.exec("id", "-u")
    assert uid.returncode == 0, uid.stderr
    assert int(uid.stdout) != 0


def test_tensorflow_is_not_in_the_image(served: Container) -> None:
    result = served.exec("python", "-c", "import tensorflow")
    assert result.returncode != 0
    assert "No module named 'tensorflow'" in result.stderr


def test_docker_stop_lets_an_in_flight_request_finish_and_exits_0(image: str) -> None:
    container = run_container()
    try:
        container.wait_ready()
        data = sample_png()
        head_sent, release = threading.Event(), threading.Event()
        answers: list[httpx.Response | BaseException] = []

        def slow_body() -> Iterator[bytes]:
            yield data[:100]
            head_sent.set()
            release.wait(STOP_GRACE_S)
            yield data[100:]

        def upload() -> None:
            try:
                headers = {"Content-Type": "image/png", "Content-Length": str(len(data))}
                answers.append(httpx.post(f"{container.url}/predict", content=slow_body(), headers=headers, timeout=30))
            except httpx.HTTPError as exc:
                answers.append(exc)

        uploader = threading.Thread(target=upload)
        uploader.start()
        assert head_sent.wait(10), "the upload did not start"
        time.sleep(0.5)  # the request reaches the app while its body is still arriving

        started = time.monotonic()
        stop = subprocess.Popen(
            [DOCKER, "stop", container.id], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        # Uvicorn logs this once it has the SIGTERM and our request is still open.
        while "Waiting for connections to close" not in container.logs() and time.monotonic() - started < 5:
            time.sleep(0.1)
        signalled_with_request_open = "Waiting for connections to close" in container.logs()
        release.set()
        uploader.join(15)
        _, stop_errors = stop.communicate(timeout=STOP_GRACE_S + 20)
        elapsed = time.monotonic() - started

        assert signalled_with_request_open, container.logs()
        assert stop.returncode == 0, stop_errors
        assert len(answers) == 1
        assert isinstance(answers[0], httpx.Response), f"the in-flight request failed: {answers[0]!r}"
        assert answers[0].status_code == 200, answers[0].text
        assert container.state("ExitCode") == "0", container.logs()
        assert container.state("OOMKilled") == "false"
        assert elapsed < STOP_GRACE_S, f"docker stop took {elapsed:.1f} s"
    finally:
        docker("rm", "--force", container.id, check=False)


def test_a_mounted_model_is_served(image: str, mounted_model: Path) -> None:
    container = run_container(
        "-v", f"{mounted_model.parent}:/models:ro", "-e", f"MODEL_PATH=/models/{mounted_model.name}"
    )
    try:
        container.wait_ready()
        with httpx.Client(timeout=30) as client:
            card = client.get(f"{container.url}/model").json()
            got = predict(client, f"{container.url}/predict", "cell.png")
        assert card["name"] == "tiny-test-model"
        with TestClient(create_app(Settings(model_path=mounted_model))) as in_process:
            assert_same_answer(got, predict(in_process, "/predict", "cell.png"))
    finally:
        docker("rm", "--force", container.id, check=False)


# --- Decode memory: one small upload must not kill the service ----------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def uniform_png(width: int, height: int, color_type: int, bit_depth: int, pixel: bytes) -> bytes:
    """A uniform PNG built row by row with zlib: 64 M pixels in a few hundred KB, in a few seconds."""
    row = b"\0" + pixel * width
    deflate = zlib.compressobj(9)
    data = b"".join([*(deflate.compress(row) for _ in range(height)), deflate.flush()])
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def huge_pngs() -> dict[str, bytes]:
    """The issue's upload (265 KB, 8000x7999 RGBA, nearly opaque) and a 64 MP 16-bit gray one (135 KB)."""
    return {
        "rgba.png": uniform_png(8000, 7999, 6, 8, bytes([200, 10, 10, 254])),
        "gray16.png": uniform_png(8000, 8000, 0, 16, b"\x80\x00"),
    }


def flood(url: str, huge: dict[str, bytes], concurrent: int) -> tuple[list[httpx.Response], list[int]]:
    """`concurrent` huge uploads at once, while two clients keep sending a small cell image."""
    names = list(huge)
    answers: list[httpx.Response] = []
    small: list[int] = []
    done = threading.Event()

    def send_huge(i: int) -> None:
        name = names[i % len(names)]
        answers.append(httpx.post(f"{url}/predict", files={"file": (name, huge[name], "image/png")}, timeout=60))

    def send_small() -> None:
        cell = {"file": ("cell.png", sample_png(), "image/png")}
        with httpx.Client(timeout=60) as client:
            while not done.is_set():
                small.append(client.post(f"{url}/predict", files=cell).status_code)

    small_clients = [threading.Thread(target=send_small) for _ in range(2)]
    huge_clients = [threading.Thread(target=send_huge, args=(i,)) for i in range(concurrent)]
    for thread in small_clients + huge_clients:
        thread.start()
    for thread in huge_clients:
        thread.join(90)
    done.set()
    for thread in small_clients:
        thread.join(90)
    return answers, small


@pytest.mark.parametrize("memory", ["1g", "512m"])
def test_sixteen_64_megapixel_uploads_cannot_oom_kill_a_small_container(
    image: str, huge_pngs: dict[str, bytes], memory: str
) -> None:
    container = run_container("--cpus", "2", "--memory", memory)
    try:
        container.wait_ready()
        answers, small = flood(container.url, huge_pngs, concurrent=16)
        statuses = Counter(answer.status_code for answer in answers)
        logs = container.logs()

        assert container.state("OOMKilled") == "false", logs
        assert container.state("Running") == "true", logs
        assert len(answers) == 16
        assert set(statuses) <= {200, 413, 503}, [answer.text for answer in answers]
        assert all(answer.headers.get("Retry-After") for answer in answers if answer.status_code == 503)
        assert small, "no small request was answered"
        assert set(small) == {200}, Counter(small)
        assert httpx.get(f"{container.url}/readyz", timeout=5).status_code == 200
        limits = httpx.get(f"{container.url}/model", timeout=5).json()["limits"]
        assert limits["memory_bytes"] == {"1g": 1024**3, "512m": 512 * 1024**2}[memory]
        assert "limits {" in logs
    finally:
        docker("rm", "--force", container.id, check=False)


def test_the_default_image_serves_with_openvino_like_the_in_process_service(
    served: Container, default_model: Path
) -> None:
    """ENGINE=auto picks OpenVINO in the image as shipped, and answers as the service does here on OpenVINO."""
    with httpx.Client(timeout=30) as client:
        card = client.get(f"{served.url}/model").json()
        got = predict(client, f"{served.url}/predict", "cell.png")
    assert card["engine"] == got["model"]["engine"] == "openvino"
    assert f"on openvino {card['precision']}" in served.logs()
    settings = Settings(model_path=default_model, engine="openvino", precision=card["precision"])
    with TestClient(create_app(settings)) as in_process:
        assert_same_answer(got, predict(in_process, "/predict", "cell.png"))


def test_onnxruntime_stays_in_the_image_as_the_fallback(image: str, default_model: Path) -> None:
    """ENGINE=onnxruntime serves from the same image, and answers as the service does here on onnxruntime."""
    container = run_container("-e", "ENGINE=onnxruntime")
    try:
        container.wait_ready()
        with httpx.Client(timeout=30) as client:
            got = predict(client, f"{container.url}/predict", "cell.png")
        assert got["model"]["engine"] == "onnxruntime"
        settings = Settings(model_path=default_model, engine="onnxruntime")
        with TestClient(create_app(settings)) as in_process:
            assert_same_answer(got, predict(in_process, "/predict", "cell.png"))
    finally:
        docker("rm", "--force", container.id, check=False)
