# The inference service: `docker build -t cell-classifier .` then `docker run -p 8000:8000 cell-classifier`.
# Both stages use the same base so the venv's interpreter links resolve in the runtime stage.

# --- builder: a venv with the service's runtime dependencies only (no train/dev extras) ---
# OpenVINO serves (ENGINE=auto); onnxruntime is installed beside it as the fallback (ENGINE=onnxruntime).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/service-venv
WORKDIR /src
# Only the pinned requirements decide this layer, so code changes do not reinstall the dependencies. They are
# the audited pins (requirements/runtime.txt, checked by pip-audit; tests/deploy/test_requirements.py keeps them
# complete), installed with --no-deps so nothing unpinned slips in. pip keeps its default .pyc compilation
# (faster start-up); pip and setuptools leave the venv once done.
COPY requirements/runtime.txt ./requirements.txt
RUN /opt/service-venv/bin/pip install --no-deps -r requirements.txt \
 && /opt/service-venv/bin/pip uninstall --yes pip setuptools

# --- runtime: the venv, the service package and the default model; nothing else ---
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# ORT_DISABLE_TELEMETRY: onnxruntime's Linux wheels otherwise upload usage events and try to persist a device id.
# OpenVINO has no such switch and needs none here: its runtime sends nothing; only its model-conversion tools
# (ovc, never imported by the service) call openvino-telemetry, which declines without a consent file under
# $HOME/intel, and the service user has no home directory.
ENV PATH=/opt/service-venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    HOST=0.0.0.0 \
    DATA_DIR=/var/lib/cell-classifier
# DATA_DIR is the one folder the service writes (the SQLite prediction log, docs/quality.md), owned by the
# service user; mount a volume there to keep the log past the container: -v cell-data:/var/lib/cell-classifier.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
 && install --directory --owner app --group app --mode 0750 /var/lib/cell-classifier

COPY --from=builder /opt/service-venv /opt/service-venv
WORKDIR /app
# Root-owned and world-readable: the service user can read but not change its code or model.
COPY service ./service
# MODEL_PATH defaults to models/model.onnx relative to /app; mount another model and point MODEL_PATH at it.
# model.int8.onnx is the INT8 variant recorded in model.json: PRECISION=auto serves it on CPUs with VNNI.
COPY models/model.onnx models/model.int8.onnx models/model.json ./models/

USER 10001:10001
# 8000: HTTP (PORT); 8081: the Open Inference Protocol over gRPC and the gRPC health service (GRPC_PORT).
EXPOSE 8000 8081
# Ready means loaded and warmed; python's urllib needs no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/readyz\", timeout=2)"]
# Exec form: python is PID 1 and gets docker stop's SIGTERM itself, so uvicorn drains in-flight requests
# (for up to GRACEFUL_SHUTDOWN_S; give `docker stop -t` / --stop-timeout at least that much).
CMD ["python", "-m", "service"]
