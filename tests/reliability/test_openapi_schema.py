"""schemathesis against the service's own OpenAPI schema: no 5xx, and every response matches what it documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from service.core.config import Settings
from service.edge.app import create_app
from tests.reliability.strategies import SCALE

# Not in the dev extra yet: skipped (and said so by -ra) rather than failing collection where it is missing.
schemathesis = pytest.importorskip("schemathesis", minversion="4.0", reason="pip install 'schemathesis>=4'")
Case = schemathesis.Case
GenerationMode = schemathesis.GenerationMode
BaseSchema = schemathesis.schemas.BaseSchema

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::UserWarning")]

API_KEY = "schemathesis-key"
# A schema says "binary"; whether the bytes are a decodable image of allowed size and format is only
# known by decoding them, so these documented answers to schema-valid bodies are accepted too; a
# schema-valid POST /admin/reload is refused with 409 by a service that serves one MODEL_PATH file; and a
# /v2/models/{name} path is well formed for any name, but the protocol answers a name it does not serve with 404.
CONTENT_STATUSES = ["200", "400", "404", "409", "413", "415"]
CONFIG = f"""
[auth.openapi.APIKeyHeader]
api_key = "{API_KEY}"

[checks.positive_data_acceptance]
expected-statuses = {CONTENT_STATUSES!r}

# /explain's patch and stride are each in range, but together may make more occluded copies than
# EXPLAIN_MAX_OCCLUSIONS allows: a documented 422 that no OpenAPI schema can express.
[[operations]]
include-path = "/explain"
checks.positive_data_acceptance.expected-statuses = {[*CONTENT_STATUSES, "422"]!r}

# /feedback's label must be one of the model card's class names, known only once the model is loaded: a
# documented 422 for a schema-valid string.
[[operations]]
include-path = "/feedback"
checks.positive_data_acceptance.expected-statuses = {[*CONTENT_STATUSES, "422"]!r}
"""


@pytest.fixture(scope="module")
def asgi_app(tiny_model_path: Path) -> FastAPI:
    # With API_KEY set, schemathesis also checks that requests without the key get 401.
    return create_app(Settings(model_path=tiny_model_path, api_key=API_KEY, max_file_bytes=256 * 1024))


@pytest.fixture(scope="module")
def api_schema(asgi_app: FastAPI) -> Iterator[BaseSchema]:
    # schemathesis runs the app's lifespan itself on its first call, so the model is loaded and warm.
    yield schemathesis.openapi.from_asgi(
        "/openapi.json", asgi_app, config=schemathesis.config.SchemathesisConfig.from_str(CONFIG)
    )
    # Stops the lifespans it started, so the batcher and decode threads end with this module.
    from schemathesis.python.asgi import shutdown_lifespans

    shutdown_lifespans()


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every documented operation; building the schema loads no model."""
    spec = create_app(Settings(model_path=Path("not-loaded.onnx"))).openapi()
    cases = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            # Only operations with a body or parameters have schema-violating requests to make.
            if "requestBody" in operation or operation.get("parameters") or operation.get("security"):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


# schemathesis.pytest.from_fixture reads a pytest private attribute that pytest 9 no longer has
# (AttributeError: '_nodeid'), so each operation's strategy is drawn here with the same checks.
@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_every_operation_answers_within_its_schema_and_never_with_a_5xx(
    api_schema: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    @given(api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(
        max_examples=max(1, int(40 * SCALE)),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=SCALE == 1,
    )
    def answers_within_schema(case: Case) -> None:
        response = case.call()
        assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text}"
        case.validate_response(response)

    answers_within_schema()
