"""POST /predict with hostile bodies: only 200 or a documented 4xx, never a 5xx; oversized bodies are cut off early."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st

from tests.reliability.conftest import HOSTILE_LIMITS, Server
from tests.reliability.samples import valid_images
from tests.reliability.strategies import fuzz_settings, hostile_files

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::UserWarning")]

DOCUMENTED = {200, 400, 401, 408, 413, 415, 422}
MAX_FILES = HOSTILE_LIMITS["max_files"]
MAX_FILE_BYTES = HOSTILE_LIMITS["max_file_bytes"]
MAX_BODY_BYTES = HOSTILE_LIMITS["max_body_bytes"]




@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def multipart_body(parts: list[Part], boundary: str) -> bytes:
    chunks = []
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        headers = f"Content-Disposition: {disposition}\r\n"
        if part.content_type is not None:
            headers += f"Content-Type: {part.content_type}\r\n"
        chunks.append(f"--{boundary}\r\n{headers}\r\n".encode() + part.data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


# Weighted towards the accepted field names, so enough requests get as far as decoding.
field_names = st.sampled_from(["file"] * 6 + ["files"] * 6 + ["image", "", "FILE", "fïle", "file[]"])
filenames = st.one_of(
    st.just("cell.png"),
    st.none(),
    st.sampled_from(["cell.png", "", "../../etc/passwd", "C:\\boot.ini", "x" * 1000, "名前.jpg", "a;b=c.png"]),
    st.text(alphabet=st.characters(blacklist_characters='"\r\n', blacklist_categories=["Cs"]), max_size=40),
)
part_types = st.sampled_from(
    [None, "image/png", "image/jpeg", "application/octet-stream", "text/plain", "image/x-nope"]
)
any_file = st.one_of(st.sampled_from(sorted(valid_images().values())), hostile_files())
odd_parts = st.builds(Part, field_names, filenames, part_types, any_file)
# Plausible parts: an accepted field name and a filename, with any content.
upload_parts = st.builds(Part, st.sampled_from(["file", "files"]), filenames.filter(bool), part_types, any_file)
part_lists = st.one_of(st.lists(upload_parts, min_size=1, max_size=MAX_FILES), st.lists(odd_parts, max_size=4))
boundaries = st.sampled_from(["b0undary", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "x" * 70, "a"])
content_types = st.sampled_from(
    [
        "image/png",
        "image/jpeg",
        "image/",
        "application/octet-stream",
        "text/plain",
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/mixed; boundary=b0undary",
        "IMAGE/PNG; charset=utf-8",
        "",
        ";;;",
    ]
)


def assert_documented(response: object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    if currently_in_test_context():
        event(f"status {status}")
    body = response.json()  # type: ignore[attr-defined]
    assert status in DOCUMENTED, f"{status}: {body}"
    if status == 200:
        for prediction in body["predictions"]:
            assert 0.0 <= prediction["probability"] <= 1.0
    else:
        assert isinstance(body["detail"], str)
        assert body["detail"]


@fuzz_settings(120, deadline_ms=None)
@given(body=hostile_files(), content_type=content_types)
def test_raw_bodies_of_any_content_type_get_200_or_a_documented_4xx(
    hostile_client: TestClient, body: bytes, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = hostile_client.post("/predict", content=body, headers=headers)
    assert_documented(response)


@fuzz_settings(150, deadline_ms=None)
@given(parts=part_lists, boundary=boundaries)
def test_multipart_bodies_with_odd_fields_and_files_get_200_or_a_documented_4xx(
    hostile_client: TestClient, parts: list[Part], boundary: str
) -> None:
    body = multipart_body(parts, boundary)
    response = hostile_client.post(
        "/predict", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert_documented(response)
    if response.status_code == 200:
        sent = [p for p in parts if p.name in ("file", "files") and p.filename is not None]
        assert len(response.json()["predictions"]) <= len(sent)


@fuzz_settings(80, deadline_ms=None)
@given(body=st.binary(max_size=4096), boundary=boundaries)
def test_garbage_with_a_multipart_content_type_gets_a_documented_4xx(
    hostile_client: TestClient, body: bytes, boundary: str
) -> None:
    response = hostile_client.post(
        "/predict", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert_documented(response)
    assert response.status_code != 200


@fuzz_settings(60, deadline_ms=None)
@given(cut=st.integers(0, 400), boundary=boundaries)
def test_a_multipart_body_cut_anywhere_gets_200_or_a_documented_4xx(
    hostile_client: TestClient, cut: int, boundary: str
) -> None:
    body = multipart_body([Part("file", "cell.png", "image/png", valid_images()["png-gray"])], boundary)
    response = hostile_client.post(
        "/predict", content=body[:cut], headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert_documented(response)


@pytest.mark.parametrize(
    ("parts", "status"),
    [
        pytest.param([], 422, id="no-fields"),
        pytest.param([Part("other", "a.png", "image/png", b"\x89PNG")], 422, id="only-an-unexpected-file-field"),
        pytest.param([Part("file", None, None, b"just text")], 422, id="file-as-a-text-field"),
        pytest.param([Part("note", None, None, b"hello")], 422, id="only-a-text-field"),
        pytest.param([Part("file", "a.png", "image/png", valid_images()["png-gray"])] * 2, 200, id="duplicate-file"),
        pytest.param([Part("files", "a.png", "image/png", valid_images()["png-gray"])] * 4, 422, id="too-many-files"),
        pytest.param([Part("file", "a.png", "image/png", b"")], 400, id="empty-file"),
        pytest.param([Part("file", "a.png", "image/png", b"\x00" * (MAX_FILE_BYTES + 1))], 413, id="file-over-limit"),
        pytest.param([Part("file", "a.svg", "image/svg+xml", b"<svg/>")], 400, id="svg"),
        pytest.param([Part("file", "a.ico", "image/x-icon", valid_images()["png-gray"][:8])], 400, id="png-magic-only"),
    ],
)
def test_multipart_shapes_get_the_documented_status(hostile_client: TestClient, parts: list[Part], status: int) -> None:
    body = multipart_body(parts, "b0undary")
    response = hostile_client.post(
        "/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    assert response.status_code == status, response.text
    assert_documented(response)


def test_a_format_pillow_reads_but_the_service_does_not_accept_gets_415(hostile_client: TestClient) -> None:
    # PPM: Pillow decodes it, the service does not list it.
    response = hostile_client.post(
        "/predict", content=b"P5 2 2 255\n\x00\x01\x02\x03", headers={"Content-Type": "image/x-ppm"}
    )
    assert response.status_code == 415, response.text
    assert "not supported" in response.json()["detail"]


def test_a_body_over_the_limit_gets_413_in_process(hostile_client: TestClient) -> None:
    response = hostile_client.post(
        "/predict", content=b"\x00" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 413


def test_a_chunked_body_over_the_limit_gets_413_in_process(hostile_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"\x00" * 16 * 1024

    response = hostile_client.post("/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413


# ---- A real server over a raw socket: the limit is enforced while the body streams in. ----

SLOW_LIMIT = 512 * 1024
CHUNK = 32 * 1024


def _read_response(sock: socket.socket, timeout_s: float) -> bytes:
    """Whatever the server sends until it closes the connection (or timeout_s passes)."""
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open after answering: {received!r}")
    except ConnectionResetError:
        pass
    return received


def _send_slowly(sock: socket.socket, head: bytes, chunk: Callable[[int], bytes], total: int) -> tuple[int, bool]:
    """Sends head, then chunks with pauses until the server answers; (body bytes sent, answered early)."""
    sock.sendall(head)
    sent = 0
    while sent < total:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sent, True
        try:
            sock.sendall(chunk(CHUNK))
        except (BrokenPipeError, ConnectionResetError):
            return sent, True
        sent += CHUNK
        time.sleep(0.005)
    return sent, False


def _chunked(n: int) -> bytes:
    return f"{n:x}\r\n".encode() + b"\x00" * n + b"\r\n"


def _still_serves(server: Server) -> bool:
    png = valid_images()["png-gray"]
    return httpx.post(f"{server.base_url}/predict", files={"file": ("a.png", png, "image/png")}).status_code == 200


@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=b0undary"])
def test_a_slow_chunked_body_over_the_limit_gets_413_and_the_connection_closed_before_it_is_all_sent(
    start_server: Callable[..., Server], content_type: str
) -> None:
    server = start_server(MAX_BODY_BYTES=SLOW_LIMIT)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    if content_type.startswith("multipart"):
        head += _chunked_bytes(b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n')
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sent, answered_early = _send_slowly(sock, head, _chunked, total=32 * SLOW_LIMIT)
        response = _read_response(sock, timeout_s=10)
    assert answered_early, "the server read the whole oversized body before answering"
    assert response.startswith(b"HTTP/1.1 413"), response
    assert b"connection: close" in response.lower()
    # Socket buffers hold some of what was sent; the point is that it is nowhere near the whole body.
    assert sent < 8 * SLOW_LIMIT, f"{sent} bytes were accepted before the 413"
    assert _still_serves(server)
    assert "Traceback" not in server.log


def _chunked_bytes(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_a_declared_content_length_over_the_limit_gets_413_before_any_body_is_sent(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(MAX_BODY_BYTES=SLOW_LIMIT)
    head = (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {64 * SLOW_LIMIT}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        response = _read_response(sock, timeout_s=10)
    assert response.startswith(b"HTTP/1.1 413"), response
    assert b"connection: close" in response.lower()
    assert _still_serves(server)


def test_an_upload_slower_than_the_request_timeout_gets_408(start_server: Callable[..., Server]) -> None:
    server = start_server(REQUEST_TIMEOUT_S=1)
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        answer = b""
        # A trickle: one byte every 100 ms, never finishing.
        while time.monotonic() - started < 5 and not answer:
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                answer = sock.recv(65536)
            else:
                sock.sendall(_chunked(1))
    assert answer.startswith(b"HTTP/1.1 408"), answer
    # Answered at the 1 s deadline, not whenever the trickle would have ended (never); generous for a busy CPU.
    assert time.monotonic() - started < 10
    assert _still_serves(server)
