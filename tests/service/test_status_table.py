"""One table decides every status code for every door; only the body's field differs by protocol."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from grpc import StatusCode

from service.core import failures
from service.core.explain import OcclusionParameterError
from service.core.preprocessing import ImageError, ImageTooLargeError, UnsupportedImageFormatError
from service.edge.errors import STATUS_FOR, error_key_for, grpc_code_for, protocol_for, status_for
from service.edge.routes.v2.codec import TensorError, TensorTooLargeError

EXPECTED = [
    (ImageTooLargeError("x"), 413, 413, StatusCode.RESOURCE_EXHAUSTED),
    (UnsupportedImageFormatError("x"), 415, 415, StatusCode.INVALID_ARGUMENT),
    (ImageError("x"), 400, 400, StatusCode.INVALID_ARGUMENT),
    (TensorTooLargeError("x"), 413, 413, StatusCode.RESOURCE_EXHAUSTED),
    (TensorError("x"), 400, 400, StatusCode.INVALID_ARGUMENT),
    (failures.PayloadTooLargeError("x"), 413, 413, StatusCode.RESOURCE_EXHAUSTED),
    (failures.UnsupportedMediaTypeError("x"), 415, 415, StatusCode.INVALID_ARGUMENT),
    (failures.MalformedRequestError("x"), 400, 400, StatusCode.INVALID_ARGUMENT),
    (failures.RequestError("x"), 400, 400, StatusCode.INVALID_ARGUMENT),
    (failures.InvalidRequestError("x"), 422, 400, StatusCode.INVALID_ARGUMENT),
    (OcclusionParameterError("x"), 422, 400, StatusCode.INVALID_ARGUMENT),
    (RequestValidationError([]), 422, 400, StatusCode.INVALID_ARGUMENT),
    (failures.RequestTimeoutError("x"), 408, 408, StatusCode.DEADLINE_EXCEEDED),
    (failures.UnauthorizedError("x"), 401, 401, StatusCode.UNAUTHENTICATED),
    (failures.ForbiddenError("x"), 403, 403, StatusCode.PERMISSION_DENIED),
    (failures.NotFoundError("x"), 404, 404, StatusCode.NOT_FOUND),
    (failures.ReloadRefusedError("x"), 409, 409, StatusCode.FAILED_PRECONDITION),
    (failures.OverloadedError("x"), 503, 503, StatusCode.UNAVAILABLE),
    (failures.BusyError("x"), 503, 503, StatusCode.UNAVAILABLE),
    (failures.NotReadyError("x"), 503, 503, StatusCode.UNAVAILABLE),
]


@pytest.mark.parametrize(("error", "rest", "v2", "grpc"), EXPECTED, ids=[type(e[0]).__name__ for e in EXPECTED])
def test_each_error_has_one_status_per_protocol(error: Exception, rest: int, v2: int, grpc: StatusCode) -> None:
    assert (status_for(error, "rest"), status_for(error, "v2")) == (rest, v2)


@pytest.mark.parametrize(("error", "rest", "v2", "grpc"), EXPECTED, ids=[type(e[0]).__name__ for e in EXPECTED])
def test_each_error_has_one_grpc_code_and_only_503s_ask_for_a_retry(
    error: Exception, rest: int, v2: int, grpc: StatusCode
) -> None:
    assert grpc_code_for(error) == (grpc, rest == 503)
    assert grpc not in (StatusCode.UNKNOWN, StatusCode.INTERNAL)


def test_every_service_error_class_is_in_the_table() -> None:
    classes = [
        c for c in vars(failures).values()
        if isinstance(c, type) and issubclass(c, failures.ServiceError) and c is not failures.ServiceError
    ]
    for kind in classes:
        status_for(kind("x"))  # raises LookupError when a class has no row
    assert len({rule.kind for rule in STATUS_FOR}) == len(STATUS_FOR)


def test_an_unknown_error_has_no_status() -> None:
    with pytest.raises(LookupError, match="no HTTP status for KeyError"):
        status_for(KeyError("x"))


@pytest.mark.parametrize(
    ("path", "protocol", "key"),
    [("/v2", "v2", "error"), ("/v2/models/x/infer", "v2", "error"), ("/v2x", "rest", "detail"),
     ("/predict", "rest", "detail")],
)
def test_the_path_chooses_the_protocol(path: str, protocol: str, key: str) -> None:
    assert (protocol_for(path), error_key_for(path)) == (protocol, key)


def test_an_invalid_request_is_422_on_predict_and_400_on_v2(client: TestClient) -> None:
    rest = client.post("/predict", files={"text": (None, "not a file")})
    name = client.get("/model").json()["name"]
    v2 = client.post(f"/v2/models/{name}/infer", json={"inputs": "not a list"})
    assert (rest.status_code, list(rest.json())) == (422, ["detail"])
    assert (v2.status_code, list(v2.json())) == (400, ["error"])


def test_unmatched_v2_paths_answer_the_protocols_error_field(client: TestClient) -> None:
    response = client.get("/v2/no/such/path")
    assert response.status_code == 404
    assert response.json()["error"].startswith("Not Found: no such endpoint of the Open Inference Protocol")
