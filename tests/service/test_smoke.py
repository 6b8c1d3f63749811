from fastapi.testclient import TestClient


def test_predict_answers_a_png_upload(client: TestClient, png_bytes: bytes) -> None:
    response = client.post("/predict", files={"file": ("cell.png", png_bytes, "image/png")})
    assert response.status_code == 200
    body = response.json()
    assert body["predictions"][0]["filename"] == "cell.png"
    assert 0.0 <= body["predictions"][0]["probability"] <= 1.0
