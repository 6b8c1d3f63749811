"""POST /explain and POST /preprocess: the occlusion map, its two forms, its limits and its errors."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from PIL import Image, ImageDraw

from service.core.config import Settings
from service.core.explain import OcclusionGrid, OcclusionParameterError, explain_with
from service.core.explain_render import figure_size
from service.core.model import Classifier
from service.core.pipeline import Answer, Pipeline
from service.core.preprocessing import preprocess_bytes
from service.edge.app import create_app
from tests.conftest import image_bytes
from tests.model_factory import save_checked, write_tiny_metadata
from tests.service.helpers import (
    InferenceGate,
    gray_png,
    metric,
    pipeline_of,
    png_claiming,
    refused_while_the_queue_is_full,
    wait_until,
)

TIMEOUT_S = 60.0
# The region the region model looks at, in input pixels: rows 60-79, columns 20-39.
REGION = (60, 80, 20, 40)
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "model.onnx"


def build_region_model(path: Path) -> Path:
    """input (N,100,100,1) -> mean of rows 60:80, columns 20:40 -> sigmoid(8 * (mean/255 - 0.5)) -> (N, 1)."""
    top, bottom, left, right = REGION
    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["region"]),
        helper.make_node("ReduceMean", ["region", "reduce_axes"], ["mean"], keepdims=0),
        helper.make_node("Div", ["mean", "c255"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
        helper.make_node("Unsqueeze", ["p", "one"], ["probability"]),
    ]
    initializers = [
        helper.make_tensor("starts", TensorProto.INT64, [2], [top, left]),
        helper.make_tensor("ends", TensorProto.INT64, [2], [bottom, right]),
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("reduce_axes", TensorProto.INT64, [3], [1, 2, 3]),
        helper.make_tensor("c255", TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("gain", TensorProto.FLOAT, [], [8.0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
    ]
    graph = helper.make_graph(
        nodes, "region",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 100, 100, 1])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
        initializers,
    )
    save_checked(graph, path)
    write_tiny_metadata(path, name="region-test-model")
    return path


@pytest.fixture(scope="module")
def region_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_region_model(tmp_path_factory.mktemp("region-model") / "model.onnx")


@pytest.fixture
def region_client(region_model_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_path=region_model_path))) as client:
        yield client


def bright_png() -> bytes:
    return gray_png(220, (100, 100))


def post_explain(client: TestClient, data: bytes, query: str = "", **kwargs: object) -> object:
    return client.post(f"/explain{query}", files={"file": ("cell.png", data, "image/png")}, **kwargs)


def box_overlaps_region(box: dict[str, int]) -> bool:
    top, bottom, left, right = REGION
    return box["x0"] < right and left < box["x1"] and box["y0"] < bottom and top < box["y1"]


def test_the_strongest_cell_is_the_region_the_model_looks_at(region_client: TestClient) -> None:
    response = post_explain(region_client, bright_png())
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == "defective"
    assert body["grid"] == {
        "patch": 20, "stride": 10, "rows": 9, "columns": 9, "fill": 128.0, "input_size": [100, 100], "covered": 100,
    }
    # The patch at (row 6, column 2) hides exactly rows 60-79, columns 20-39.
    assert body["strongest"]["row"] == 6
    assert body["strongest"]["column"] == 2
    assert body["strongest"]["box"] == {"x0": 20, "y0": 60, "x1": 40, "y1": 80}
    drops = np.array(body["drops"])
    assert drops.shape == (9, 9)
    # Positions that do not touch the region change nothing.
    for row, column in np.ndindex(drops.shape):
        x0, y0 = column * 10, row * 10
        if not box_overlaps_region({"x0": x0, "y0": y0, "x1": x0 + 20, "y1": y0 + 20}):
            assert drops[row, column] == pytest.approx(0.0, abs=1e-6)
    assert body["strongest"]["drop"] == pytest.approx(drops.max())
    assert drops.max() > 0.3


def test_a_negative_prediction_is_explained_by_its_own_class(region_client: TestClient) -> None:
    # Dark region: 'functional'; hiding it under mid-gray raises p(defective), so p(functional) drops.
    body = post_explain(region_client, gray_png(20, (100, 100))).json()
    assert body["label"] == "functional"
    assert body["strongest"]["box"] == {"x0": 20, "y0": 60, "x1": 40, "y1": 80}
    assert body["strongest"]["drop"] > 0.3


def test_explain_with_works_offline_on_the_classifier(region_model_path: Path) -> None:
    classifier = Classifier.load(region_model_path, Settings().session)
    image = preprocess_bytes(bright_png())
    result = explain_with(classifier.predict, image, OcclusionGrid(10, 10), 0.5, ("functional", "defective"), chunk=7)
    assert result.drops.shape == (10, 10)
    assert result.strongest in {(6, 2), (6, 3), (7, 2), (7, 3)}
    pixel_map = result.pixel_map()
    assert np.unravel_index(np.nanargmax(pixel_map), pixel_map.shape)[0] in range(60, 80)


@pytest.mark.parametrize(
    ("patch", "stride", "rows", "covered"), [(20, 10, 9, 100), (30, 20, 4, 90), (100, 1, 1, 100), (10, 10, 10, 100)]
)
def test_grid_geometry(patch: int, stride: int, rows: int, covered: int) -> None:
    grid = OcclusionGrid.checked(patch, stride, 100)
    assert (grid.rows, grid.columns, grid.covered) == (rows, rows, covered)
    copies = grid.occluded(np.zeros((100, 100, 1), np.float32))
    assert copies.shape == (rows * rows, 100, 100, 1)
    assert (copies[-1] == 128.0).sum() == patch * patch


def test_grid_refuses_more_copies_than_the_cap() -> None:
    with pytest.raises(OcclusionParameterError, match=r"5x5 = 25 occluded copies; the limit is 24"):
        OcclusionGrid.checked(20, 20, 24)


@pytest.mark.parametrize(("patch", "stride", "message"), [(0, 10, "patch is 0 px"), (20, 101, "stride is 101 px")])
def test_grid_refuses_out_of_range_sizes(patch: int, stride: int, message: str) -> None:
    with pytest.raises(OcclusionParameterError, match=message):
        OcclusionGrid.checked(patch, stride, 100)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?patch=0", "query parameter 'patch': Input should be greater than or equal to 1"),
        ("?patch=101", "query parameter 'patch': Input should be less than or equal to 100"),
        ("?stride=0", "query parameter 'stride': Input should be greater than or equal to 1"),
        ("?patch=big", "query parameter 'patch': Input should be a valid integer"),
        ("?format=jpeg", "query parameter 'format': Input should be 'json' or 'png'"),
    ],
)
def test_explain_refuses_out_of_range_parameters_with_422(client: TestClient, query: str, message: str) -> None:
    response = post_explain(client, gray_png(100), query)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(message)


def test_explain_refuses_a_grid_over_the_cap_with_422_naming_it(client: TestClient) -> None:
    response = post_explain(client, gray_png(100), "?patch=5&stride=5")
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "patch 5 px with stride 5 px makes 20x20 = 400 occluded copies; the limit is 100 "
        "(EXPLAIN_MAX_OCCLUSIONS): use a larger stride or patch"
    )


def test_the_cap_is_a_setting(make_client: Callable[..., TestClient]) -> None:
    client = make_client(EXPLAIN_MAX_OCCLUSIONS=400)
    assert post_explain(client, gray_png(100), "?patch=5&stride=5").status_code == 200


def _bad_uploads() -> list[tuple[str, dict[str, object]]]:
    png = gray_png(100)
    return [
        ("empty file", {"files": {"file": ("a.png", b"", "image/png")}}),
        ("garbage", {"files": {"file": ("a.png", b"not an image at all", "image/png")}}),
        ("truncated png", {"files": {"file": ("a.png", png[: len(png) // 2], "image/png")}}),
        ("unsupported format", {"files": {"file": ("a.ico", image_bytes(Image.new("L", (16, 16)), "ICO"), "")}}),
        ("too many pixels", {"files": {"file": ("a.png", png_claiming(20_000, 20_000), "image/png")}}),
        ("wrong field", {"files": {"image": ("a.png", png, "image/png")}}),
        ("text field only", {"data": {"file": "hello"}}),
        ("json body", {"json": {"file": "a.png"}}),
        ("raw empty body", {"content": b"", "headers": {"Content-Type": "image/png"}}),
    ]


@pytest.mark.parametrize(("case", "request_args"), _bad_uploads(), ids=[case for case, _ in _bad_uploads()])
@pytest.mark.parametrize("route", ["/explain", "/preprocess"])
def test_bad_uploads_get_the_predict_contract(
    client: TestClient, route: str, case: str, request_args: dict[str, object]
) -> None:
    expected = client.post("/predict", **request_args)
    got = client.post(route, **request_args)
    assert 400 <= expected.status_code < 500, case
    assert (got.status_code, got.json()) == (expected.status_code, expected.json())


@pytest.mark.parametrize("route", ["/explain", "/preprocess"])
def test_one_image_per_request(client: TestClient, route: str) -> None:
    files = [("file", ("a.png", gray_png(10), "image/png")), ("file", ("b.png", gray_png(20), "image/png"))]
    response = client.post(route, files=files)
    assert response.status_code == 422
    assert response.json()["detail"] == "too many files: at most 1 per request"


@pytest.mark.parametrize("route", ["/explain", "/preprocess"])
def test_the_api_key_guards_explain_and_preprocess(make_client: Callable[..., TestClient], route: str) -> None:
    client = make_client(API_KEY="s3cret")
    files = {"file": ("a.png", gray_png(100), "image/png")}
    assert client.post(route, files=files).status_code == 401
    assert client.post(route, files=files, headers={"X-API-Key": "s3cret"}).status_code == 200


def test_json_and_png_agree_with_each_other_and_with_predict(region_client: TestClient) -> None:
    data = bright_png()
    body = post_explain(region_client, data).json()
    drops = np.array(body["drops"])
    assert (body["strongest"]["row"], body["strongest"]["column"]) == np.unravel_index(drops.argmax(), drops.shape)
    predicted = region_client.post("/predict", files={"file": ("cell.png", data, "image/png")}).json()
    assert body["probability"] == pytest.approx(predicted["predictions"][0]["probability"], abs=1e-6)
    assert body["label"] == predicted["predictions"][0]["label"]
    for response in (
        post_explain(region_client, data, "?format=png"),
        post_explain(region_client, data, headers={"Accept": "image/png"}),
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(response.content)) as png:
            assert png.format == "PNG"
            assert png.size == figure_size()
            # The overlay is drawn: red (drop) pixels exist where the strongest patch is, scaled 4x.
            rgb = np.asarray(png.convert("RGB"), dtype=int)
    # ?format=json wins over the Accept header.
    forced = post_explain(region_client, data, "?format=json", headers={"Accept": "image/png"})
    assert forced.headers["content-type"] == "application/json"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50


def test_raw_image_body_is_explained_too(region_client: TestClient) -> None:
    response = region_client.post("/explain", content=bright_png(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    assert response.json()["filename"] is None


def test_preprocess_returns_exactly_the_model_input(client: TestClient) -> None:
    photo = Image.linear_gradient("L").rotate(30).resize((640, 480)).convert("RGB")
    data = image_bytes(photo, "JPEG", quality=90)
    response = client.post("/preprocess", files={"file": ("photo.jpg", data, "image/jpeg")})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as png:
        assert (png.mode, png.size) == ("L", (100, 100))
        got = np.asarray(png, dtype=np.float32)
    np.testing.assert_array_equal(got, preprocess_bytes(data)[:, :, 0])


def test_explanations_are_counted_apart_from_predictions(client: TestClient) -> None:
    response = post_explain(client, gray_png(100))
    assert response.status_code == 200
    assert metric(client, "explanations_total") == 1
    assert metric(client, "explanation_images_total") == 81
    assert metric(client, "explanation_duration_seconds_count") == 1
    assert metric(client, "http_requests_total", route="/explain", method="POST", status="200") == 1
    # Only the uploaded image is a served input for the drift metrics; the 81 copies are not.
    assert metric(client, "input_mean_gray_level_count") == 1
    # The version that answered, as /predict states it.
    assert response.headers["x-model-version"] == response.json()["model"]["version"] == "1"


def test_explanation_chunks_never_exceed_the_batch_size_and_predictions_go_between_them(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = InferenceGate()
    batches: list[np.ndarray] = []
    lock = threading.Lock()
    predict = Classifier.predict

    def recording_predict(self: Classifier, batch: np.ndarray) -> np.ndarray:
        gate.pass_through()
        with lock:
            batches.append(batch.copy())
        return predict(self, batch)

    monkeypatch.setattr(Classifier, "predict", recording_predict)
    client = make_client(MAX_BATCH_SIZE=4, EXPLAIN_CHUNK_IMAGES=8, REQUEST_PATH="batched")
    batches.clear()  # warm-up
    gate.close()
    try:
        with ThreadPoolExecutor(2) as pool:
            explanation = pool.submit(post_explain, client, gray_png(100))
            gate.wait_entered()
            prediction = pool.submit(client.post, "/predict", files={"file": ("p.png", gray_png(7), "image/png")})
            wait_until(lambda: pipeline_of(client).predictor.queued == 1)
            gate.open()
            assert prediction.result(TIMEOUT_S).status_code == 200
            assert explanation.result(TIMEOUT_S).status_code == 200
    finally:
        gate.open()
    assert sum(len(batch) for batch in batches) == 82 + 1
    assert max(len(batch) for batch in batches) <= 4
    # The /predict image (uniform level 7) ran right after the explanation's first chunk, not after all 21.
    assert len(batches[1]) == 1
    assert np.all(batches[1] == 7.0)


def test_explain_answers_503_with_retry_after_when_the_queue_is_full(
    make_client: Callable[..., TestClient], gate: InferenceGate
) -> None:
    client = make_client(MAX_QUEUE_IMAGES=2, MAX_BATCH_SIZE=2, RETRY_AFTER_S=5, REQUEST_PATH="batched")
    refused = refused_while_the_queue_is_full(client, gate, 2, lambda: post_explain(client, gray_png(30)))
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["detail"] == "the service is busy: overloaded (2 images are queued); retry after 5 s"
    assert metric(client, "explanations_total") == 0


@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="models/model.onnx is not in this checkout")
def test_the_shipped_model_gives_a_map_for_a_cracked_cell() -> None:
    rng = np.random.default_rng(0)
    # A bright, grainy cell with darker busbars, and a dark crack across its lower left.
    cell = rng.normal(190, 12, (300, 300)).clip(0, 255).astype(np.uint8)
    cell[:, 95:100] = cell[:, 195:200] = 120
    image = Image.fromarray(cell, "L")
    ImageDraw.Draw(image).line([(20, 200), (140, 270)], fill=25, width=9)
    data = image_bytes(image, "PNG")
    with TestClient(create_app(Settings(model_path=SHIPPED_MODEL))) as client:
        response = post_explain(client, data)
        assert response.status_code == 200
        body = response.json()
        drops = np.array(body["drops"])
        assert drops.shape == (9, 9)
        assert np.all(np.isfinite(drops))
        # A map, not a flat field: hiding some regions moves the prediction by more than a percent.
        assert np.ptp(drops) > 0.01
        png = post_explain(client, data, "?format=png")
        assert png.status_code == 200
        assert Image.open(io.BytesIO(png.content)).size == figure_size()


def test_a_newer_version_taking_over_mid_explanation_is_503(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Pipeline.answer_arrays

    async def swapping(
        self: Pipeline, arrays: list[np.ndarray], deadline: float, *, served_inputs: bool = True
    ) -> Answer:
        answer = await original(self, arrays, deadline, served_inputs=served_inputs)
        # The copies (not served inputs) are answered by another version, as after a hot reload.
        return answer if served_inputs else Answer(answer.probabilities, replace(answer.model, version="2"))

    monkeypatch.setattr(Pipeline, "answer_arrays", swapping)
    response = post_explain(client, gray_png(100))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"] == (
        "the service is busy: model version 2 took over from 1 during the explanation; retry after 1 s"
    )


ELPV_CRACKED_CELL = "images/cell0470.png"  # annotated defective with probability 1; its cracks are visible


@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="models/model.onnx is not in this checkout")
def test_the_shipped_model_explains_a_real_cracked_elpv_cell() -> None:
    elpv = pytest.importorskip("elpv_dataset", reason="the ELPV images come with the train extra")
    cell = Path(elpv.__file__).parent / "data" / ELPV_CRACKED_CELL
    with TestClient(create_app(Settings(model_path=SHIPPED_MODEL))) as client:
        response = post_explain(client, cell.read_bytes())
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == "defective"
    drops = np.array(body["drops"])
    # Hiding the strongest region lowers p(defective) by several points: evidence, not noise.
    assert drops.max() > 0.05
    strongest = body["strongest"]
    assert drops[strongest["row"], strongest["column"]] == drops.max()
