"""bench.grpc_vs_rest's requests are the ones each door reads as one encoded file asking for the probability,
and its answers parse as the doors write them."""

from __future__ import annotations

from bench import grpc_vs_rest
from service.edge.grpc import grpc_predict_v2_pb2 as pb
from service.edge.grpc import tensors
from service.edge.routes.v2 import codec

LIMITS = codec.Limits(max_items=4, max_item_bytes=1000)
FILE = b"\x89PNG not really"


def test_the_rest_request_is_one_binary_file_asking_for_the_probability_in_binary() -> None:
    body, headers = grpc_vs_rest.rest_request("m", FILE)
    parsed = codec.parse_request(body, codec.header_length_of(headers[grpc_vs_rest.HEADER_LENGTH]), LIMITS)
    assert codec.read_input(parsed, LIMITS).images == [FILE]
    assert [(c.signature.name, c.binary) for c in codec.choose_outputs(parsed.request)] == [("probability", True)]


def test_the_grpc_request_is_one_raw_file_asking_for_the_probability() -> None:
    call = tensors.read_request(pb.ModelInferRequest.FromString(grpc_vs_rest.grpc_request("m", FILE)), LIMITS)
    assert call.tensor.images == [FILE]
    assert call.raw
    assert [spec.name for spec in call.outputs] == ["probability"]


def test_the_grpc_answer_parses_to_its_probability() -> None:
    answer = tensors.encode_response(
        model_name="m", model_version="1", request_id="", outputs=[codec.PROBABILITY], raw=True,
        probabilities=[0.625], labels=["x"], ids=[],
    )
    assert grpc_vs_rest.grpc_probability(answer.SerializeToString()) == 0.625
