"""Every refusal of POST /predict: the right status, a JSON {"detail": ...} a person can act on, never a 500."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import image_bytes
from tests.service.helpers import gray_png, metric, multipart_body, png_claiming


def assert_error(response: httpx.Response, status: int, match: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["detail"]
    assert isinstance(body["detail"], str)
    assert re.search(match, body["detail"]), body["detail"]


def post_file(client: TestClient, data: bytes, filename: str = "cell.png", **kwargs: object) -> httpx.Response:
    return client.post("/predict", files={"file": (filename, data, "image/png")}, **kwargs)  # type: ignore[arg-type]


def post_raw(client: TestClient, data: bytes, content_type: str = "image/png") -> httpx.Response:
    return client.post("/predict", content=data, headers={"Content-Type": content_type})


UNDECODABLE = {
    "truncated-png": (gray_png(100, (64, 64))[:70], "truncated or corrupt"),
    "random-bytes": (np.random.default_rng(1).bytes(2048), "not a decodable image"),
    "zero-bytes": (b"", "the file is empty"),
    "text-named-png": (b"name,label\ncell1,defective\n", "not a decodable image"),
}
UNSUPPORTED_FORMATS = ["ICO", "PPM", "TGA"]


@pytest.mark.parametrize(("data", "message"), list(UNDECODABLE.values()), ids=list(UNDECODABLE))
def test_predict_rejects_undecodable_uploads_with_400(client: TestClient, data: bytes, message: str) -> None:
    assert_error(post_file(client, data), 400, f"^file 'cell.png': .*{message}")


@pytest.mark.parametrize(("data", "message"), list(UNDECODABLE.values()), ids=list(UNDECODABLE))
def test_predict_rejects_undecodable_raw_bodies_with_400(client: TestClient, data: bytes, message: str) -> None:
    assert_error(post_raw(client, data), 400, f"^the request body: .*{message}")


def test_predict_names_the_bad_file_among_several(client: TestClient) -> None:
    uploads = [
        ("files", ("good.png", gray_png(10), "image/png")),
        ("files", ("bad.png", b"not an image", "image/png")),
    ]
    assert_error(client.post("/predict", files=uploads), 400, "^file 'bad.png': ")


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("multipart/form-data", b"--x\r\n\r\n", "malformed multipart body: Missing boundary"),
        ("multipart/form-data; boundary=x", b"--x\r\ngarbage without headers\r\n--x--\r\n", "malformed multipart"),
    ],
    ids=["no-boundary", "garbage-parts"],
)
def test_predict_rejects_malformed_multipart_with_400(
    client: TestClient, content_type: str, body: bytes, message: str
) -> None:
    assert_error(client.post("/predict", content=body, headers={"Content-Type": content_type}), 400, message)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", None, "application/x-www-form-urlencoded"])
def test_predict_rejects_unsupported_content_types_with_415(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/predict", content=gray_png(50), headers=headers)
    shown = re.escape(content_type or "no Content-Type")
    assert_error(response, 415, f"^{shown} is not accepted: send multipart/form-data with a 'file' field")


@pytest.mark.parametrize("fmt", UNSUPPORTED_FORMATS)
def test_predict_rejects_unsupported_image_formats_with_415(client: TestClient, fmt: str) -> None:
    data = image_bytes(Image.new("RGB", (32, 32), (90, 90, 90)), fmt)
    assert_error(post_file(client, data, f"cell.{fmt.lower()}"), 415, f"image format {fmt} is not supported")
    assert_error(post_raw(client, data, "image/x-anything"), 415, f"image format {fmt} is not supported")


@pytest.fixture
def small_limits_client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(MAX_BODY_BYTES=4000, MAX_FILE_BYTES=1500)


def _chunks(data: bytes, size: int = 500) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_predict_rejects_a_body_over_max_body_bytes_with_413(small_limits_client: TestClient) -> None:
    assert_error(post_raw(small_limits_client, b"\x00" * 4001), 413, "request body is larger than 4000 bytes")
    uploads = [("files", (f"{i}.png", b"\x00" * 1000, "image/png")) for i in range(5)]
    assert_error(small_limits_client.post("/predict", files=uploads), 413, "larger than 4000 bytes")
    # Refused from Content-Length before routing, yet counted under the route it was sent to.
    assert metric(small_limits_client, "http_requests_total", route="/predict", method="POST", status="413") == 2
    assert metric(small_limits_client, "http_requests_total", route="unmatched", method="POST", status="413") == 0


def test_predict_rejects_a_streamed_body_over_max_body_bytes_without_content_length(
    small_limits_client: TestClient,
) -> None:
    response = small_limits_client.post(
        "/predict", content=_chunks(b"\x00" * 6000), headers={"Content-Type": "image/png"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "request body is larger than 4000 bytes")


def test_predict_rejects_a_streamed_multipart_body_over_max_body_bytes(small_limits_client: TestClient) -> None:
    body, headers = multipart_body([("files", f"{i}.png", b"\x00" * 1000) for i in range(5)])
    response = small_limits_client.post("/predict", content=_chunks(body), headers=headers)
    assert_error(response, 413, "request body is larger than 4000 bytes")


def test_predict_rejects_a_file_over_max_file_bytes_with_413(small_limits_client: TestClient) -> None:
    assert_error(post_file(small_limits_client, b"\x00" * 1501), 413, "^file 'cell.png' is larger than the 1500-byte")
    assert_error(post_raw(small_limits_client, b"\x00" * 1501), 413, "^the request body is larger than the 1500-byte")


def test_predict_accepts_a_file_of_exactly_max_file_bytes(make_client: Callable[..., TestClient]) -> None:
    data = gray_png(60)
    client = make_client(MAX_FILE_BYTES=len(data))
    assert post_file(client, data).status_code == 200
    assert post_raw(client, data).status_code == 200


@pytest.mark.parametrize("send", [post_file, post_raw], ids=["multipart", "raw"])
def test_predict_refuses_a_png_declaring_100000x100000_pixels_before_decoding(
    client: TestClient, send: Callable[[TestClient, bytes], httpx.Response]
) -> None:
    # CPU time, not wall time, so a busy machine cannot fail it; decoding 10^10 pixels would take minutes.
    start = time.process_time()
    response = send(client, png_claiming(100_000, 100_000))
    assert time.process_time() - start < 2.0
    assert_error(response, 413, "declares too many pixels")


def test_predict_refuses_images_over_max_pixels_with_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(MAX_PIXELS=1000)
    assert_error(post_file(client, gray_png(50, (40, 30))), 413, "40x30 = 1200 pixels; the limit is 1000")
    assert post_file(client, gray_png(50, (40, 25))).status_code == 200


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([("note", None, b"hello")], "^no image: send it in a multipart field named 'file'"),
        ([], "^no image"),
        ([("image", "cell.png", gray_png(5))], r"unexpected file field\(s\) \['image'\]: use 'file'"),
        ([("file", None, b"cell.png")], "^field 'file' must be a file upload, not text"),
        ([("files", "a.png", gray_png(5)), ("files", None, b"b.png")], "^field 'files' must be a file upload"),
    ],
    ids=["text-field-only", "no-parts", "unexpected-file-field", "text-in-file", "text-in-files"],
)
def test_predict_rejects_multipart_without_usable_file_fields_with_422(
    client: TestClient, parts: list[tuple[str, str | None, bytes]], message: str
) -> None:
    body, headers = multipart_body(parts)
    assert_error(client.post("/predict", content=body, headers=headers), 422, message)


def test_predict_rejects_more_files_than_max_files_with_422(make_client: Callable[..., TestClient]) -> None:
    client = make_client(MAX_FILES=2)
    uploads = [("files", (f"{i}.png", gray_png(i), "image/png")) for i in range(3)]
    assert_error(client.post("/predict", files=uploads), 422, "^too many files: at most 2 per request")


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cret-key-but-longer"}, {"X-API-Key": ""}, {"Api-Key": "s3cret-key"}],
    ids=["missing", "wrong", "longer", "empty", "other-header"],
)
def test_predict_with_api_key_set_rejects_a_missing_or_wrong_key_with_401(
    make_client: Callable[..., TestClient], headers: dict[str, str]
) -> None:
    client = make_client(API_KEY="s3cret-key")
    response = post_file(client, b"never decoded", headers=headers)
    assert_error(response, 401, "missing or wrong API key: send it in the X-API-Key header")


def test_predict_without_api_key_set_needs_no_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client(API_KEY="")
    assert post_file(client, gray_png(9), headers={"X-API-Key": "anything"}).status_code == 200


def test_api_key_guards_only_predict(make_client: Callable[..., TestClient]) -> None:
    client = make_client(API_KEY="s3cret-key")
    for path in ("/healthz", "/readyz", "/model", "/metrics"):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/predict", 405), ("GET", "/nowhere", 404)])
def test_unknown_routes_and_methods_answer_json_errors(client: TestClient, method: str, path: str, status: int) -> None:
    assert_error(client.request(method, path), status, "Not Found|Method Not Allowed")
