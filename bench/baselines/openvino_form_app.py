"""Baseline (c) taking uploads as the README's curl sends them: a multipart `file` field (FastAPI's UploadFile).

The same 25 lines as `bench.baselines.openvino_app` (its decode, its compilation, one infer request per thread)
with the upload read the way a FastAPI user writes it; the reference of `python -m bench --multipart`.
`MODEL_PATH=... uvicorn bench.baselines.openvino_form_app:app`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, UploadFile

from bench.baselines.openvino_app import decode_draft, lifespan

app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/predict")
def predict(request: Request, file: UploadFile) -> dict[str, float]:
    """A multipart image -> the positive-class probability, on this thread's own infer request."""
    local = request.app.state.local
    if not hasattr(local, "infer"):
        local.infer = request.app.state.compiled.create_infer_request()
    local.infer.infer({0: decode_draft(file.file.read())})
    return {"probability": float(local.infer.get_output_tensor(0).data[0, 0])}
