"""POST /predict with inputs it must accept: the answer is the tiny model on the shared preprocessing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import image_bytes
from tests.model_factory import CLASS_NAMES
from tests.service.helpers import expected_probability, gradient, gray_png

FUNCTIONAL, DEFECTIVE = CLASS_NAMES


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return image_bytes(gradient((96, 64)), "JPEG", exif=exif)


def _animated_gif() -> bytes:
    frames = [Image.new("L", (30, 30), level) for level in (40, 220)]
    return image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _rgba_png() -> bytes:
    image = gradient(mode="RGBA")
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    return image_bytes(image, "PNG")


ACCEPTED = {
    "jpeg": ("image/jpeg", image_bytes(gradient(mode="RGB"), "JPEG")),
    "png-8-bit": ("image/png", image_bytes(gradient(), "PNG")),
    "png-16-bit": ("image/png", image_bytes(Image.fromarray(np.full((20, 30), 50_000, np.uint16)), "PNG")),
    "png-palette": ("image/png", image_bytes(gradient(mode="RGB").convert("P"), "PNG")),
    "png-rgba": ("image/png", _rgba_png()),
    "webp": ("image/webp", image_bytes(gradient(mode="RGB"), "WEBP")),
    "bmp": ("image/bmp", image_bytes(gradient(mode="RGB"), "BMP")),
    "gif": ("image/gif", image_bytes(gradient(), "GIF")),
    "gif-animated": ("image/gif", _animated_gif()),
    "tiff": ("image/tiff", image_bytes(gradient(), "TIFF", save_all=True, append_images=[Image.new("L", (9, 9))])),
    "jpeg-cmyk": ("image/jpeg", image_bytes(gradient(mode="RGB").convert("CMYK"), "JPEG")),
    "jpeg-exif-rotated": ("image/jpeg", _exif_rotated_jpeg()),
}


def test_predict_answers_a_png_upload_with_the_documented_body(client: TestClient, tiny_model_path: Path) -> None:
    data = gray_png(230)
    response = client.post("/predict", files={"file": ("cell.png", data, "image/png")})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    served = client.get("/model").json()
    sha256 = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    assert body["model"] == {
        "id": sha256, "card_sha256": sha256, "name": "tiny-test-model", "version": "1",
        "engine": served["engine"], "precision": "fp32", "flip_averaged": False,
    }
    assert body["threshold"] == 0.5
    [prediction] = body["predictions"]
    assert prediction["filename"] == "cell.png"
    assert prediction["probability"] == pytest.approx(expected_probability(data), abs=1e-6)
    assert prediction["label"] == DEFECTIVE
    assert prediction["scores"][DEFECTIVE] == pytest.approx(prediction["probability"])
    assert sum(prediction["scores"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize(("level", "label"), [(10, FUNCTIONAL), (120, FUNCTIONAL), (140, DEFECTIVE), (250, DEFECTIVE)])
def test_predict_labels_at_the_model_threshold(client: TestClient, level: int, label: str) -> None:
    response = client.post("/predict", files={"file": ("cell.png", gray_png(level), "image/png")})
    assert response.json()["predictions"][0]["label"] == label


@pytest.mark.parametrize(("content_type", "data"), list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_predict_accepts_every_supported_format_as_a_multipart_file(
    client: TestClient, content_type: str, data: bytes
) -> None:
    response = client.post("/predict", files={"file": ("cell", data, content_type)})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["probability"] == pytest.approx(expected_probability(data), abs=1e-6)


@pytest.mark.parametrize(("content_type", "data"), list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_predict_accepts_every_supported_format_as_a_raw_body(
    client: TestClient, content_type: str, data: bytes
) -> None:
    response = client.post("/predict", content=data, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert prediction["filename"] is None
    assert prediction["probability"] == pytest.approx(expected_probability(data), abs=1e-6)


@pytest.mark.parametrize(
    "content_type", ["application/octet-stream", "image/png; charset=binary", "IMAGE/PNG", "image/x-anything"]
)
def test_predict_accepts_a_raw_body_with_any_image_or_octet_stream_type(client: TestClient, content_type: str) -> None:
    data = gray_png(77)
    response = client.post("/predict", content=data, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["probability"] == pytest.approx(expected_probability(data), abs=1e-6)


def test_predict_answers_repeated_files_fields_in_upload_order(client: TestClient) -> None:
    levels = [200, 30, 160, 90, 250]
    uploads = [("files", (f"cell-{level}.png", gray_png(level), "image/png")) for level in levels]
    response = client.post("/predict", files=uploads)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == [f"cell-{level}.png" for level in levels]
    assert [p["probability"] for p in predictions] == pytest.approx(
        [expected_probability(gray_png(level)) for level in levels], abs=1e-6
    )


def test_predict_answers_mixed_file_and_files_fields_in_upload_order(client: TestClient) -> None:
    uploads = [
        ("files", ("a.png", gray_png(20), "image/png")),
        ("file", ("b.png", gray_png(220), "image/png")),
        ("files", ("c.png", gray_png(120), "image/png")),
    ]
    response = client.post("/predict", files=uploads)
    assert [p["filename"] for p in response.json()["predictions"]] == ["a.png", "b.png", "c.png"]


def test_predict_shortens_very_long_filenames(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("x" * 1000 + ".png", gray_png(50), "image/png")})
    assert response.json()["predictions"][0]["filename"] == "x" * 255


def test_predict_ignores_extra_text_fields_beside_the_file(client: TestClient) -> None:
    response = client.post(
        "/predict", data={"note": "from line 3"}, files={"file": ("cell.png", gray_png(50), "image/png")}
    )
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_predict_accepts_as_many_files_as_max_files(make_client: Callable[..., TestClient]) -> None:
    client = make_client(MAX_FILES=3)
    uploads = [("files", (f"{i}.png", gray_png(i * 50), "image/png")) for i in range(3)]
    assert len(client.post("/predict", files=uploads).json()["predictions"]) == 3


def test_predict_with_api_key_set_answers_the_right_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client(API_KEY="s3cret-key")
    response = client.post(
        "/predict", files={"file": ("cell.png", gray_png(50), "image/png")}, headers={"X-API-Key": "s3cret-key"}
    )
    assert response.status_code == 200


def test_predict_gives_the_same_answer_for_the_same_bytes_every_time(client: TestClient) -> None:
    data = image_bytes(gradient(mode="RGB"), "JPEG")
    bodies = [client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"}).json() for _ in range(3)]
    ids = {body["predictions"][0].pop("id") for body in bodies}
    assert len(ids) == 3, "each prediction gets its own id"
    assert all(body == bodies[0] for body in bodies)
