"""The gRPC modules checked in under service/edge/grpc are what grpcio-tools makes of the .proto today, and the
.proto is wire-compatible with the one Triton's client was built from (KServe's and Triton's are the same)."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor

from service.edge.grpc import generate
from service.edge.grpc import grpc_predict_v2_pb2 as pb

pytest.importorskip("grpc_tools", reason="the dev extra (grpcio-tools) is not installed")
triton = pytest.importorskip("tritonclient.grpc.service_pb2", reason="tritonclient[grpc] is not installed")


def test_the_checked_in_modules_are_what_the_generator_writes_now() -> None:
    for name, text in generate.generate().items():
        assert (generate.HERE / name).read_text() == text, (
            f"service/edge/grpc/{name} is stale: regenerate with python -m service.edge.grpc.generate"
        )


def fields(message: Descriptor) -> dict[str, tuple[int, int, bool, str | None]]:
    return {
        f.name: (f.number, f.type, f.is_repeated, f.message_type.full_name if f.message_type else None)
        for f in message.fields
    }


def messages(message: Descriptor) -> list[Descriptor]:
    return [message, *(nested for child in message.nested_types for nested in messages(child))]


@pytest.mark.parametrize("name", sorted(pb.DESCRIPTOR.message_types_by_name))
def test_each_message_has_tritons_field_numbers_and_types(name: str) -> None:
    ours = pb.DESCRIPTOR.message_types_by_name[name]
    theirs = triton.DESCRIPTOR.message_types_by_name[name]
    for our, their in zip(messages(ours), messages(theirs), strict=True):
        assert our.full_name == their.full_name
        assert fields(our) == fields(their), our.full_name


def test_each_call_has_tritons_path_and_message_types() -> None:
    ours = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        their = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            their.input_type.full_name, their.output_type.full_name
        )
        assert not method.client_streaming
        assert not method.server_streaming
    assert {m.name for m in ours.methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"
    }
