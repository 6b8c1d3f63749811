"""The gRPC door's tensors: a ModelInferRequest in, a ModelInferResponse out, through the /v2 codec's rules.

The same inputs, limits and messages as the HTTP door (`service.edge.routes.v2.codec`): an input's data comes
either in `raw_input_contents` (what tritonclient always sends: the protocol's raw layout, read by the same
function as HTTP's binary data) or in the tensor's typed `contents` (what KServe's client sends for Python
lists), never both. A request sent raw gets its outputs raw (`raw_output_contents`, all tritonclient reads);
one sent typed gets typed `contents`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.edge.grpc import grpc_predict_v2_pb2 as pb
from service.edge.routes.v2 import codec
from service.edge.routes.v2.codec import IMAGE_BYTES, PROBABILITY, ModelInput, Signature, TensorError

# The one `contents` field each of the model's input datatypes may use.
_CONTENTS_FIELD = {"BYTES": "bytes_contents", "FP32": "fp32_contents"}
IDS_PARAMETER = "ids"  # the response's prediction ids, comma-separated (parameters hold scalars only)


@dataclass(frozen=True)
class InferCall:
    """What a ModelInferRequest asks for, read and checked."""

    tensor: ModelInput
    outputs: list[Signature]
    raw: bool  # the input came in raw_input_contents: the outputs go back raw


def read_request(request: pb.ModelInferRequest, limits: codec.Limits) -> InferCall:
    """The request's one input, decoded and checked as the HTTP door checks it, and the outputs it names."""
    if len(request.inputs) != 1:
        raise codec.one_input_error(len(request.inputs))
    tensor = request.inputs[0]
    spec = codec.signature_of(tensor.name, tensor.datatype)
    shape = list(tensor.shape)
    codec.element_count(shape, spec, limits)  # before touching the data: the shape and MAX_FILES
    raw = request.raw_input_contents
    typed = [field.name for field, _ in tensor.contents.ListFields()]
    if raw and typed:
        raise TensorError(
            f"input '{spec.name}' has data both in contents and in raw_input_contents: send one of them"
        )
    if raw:
        if len(raw) != 1:
            raise TensorError(
                f"raw_input_contents holds {len(raw)} entries for 1 input: send one entry per input, in order"
            )
        read = codec.read_raw(spec, shape, raw[0], limits)
    elif typed:
        read = _read_contents(spec, shape, tensor.contents, typed, limits)
    else:
        field = _CONTENTS_FIELD[spec.datatype]
        raise TensorError(f"input '{spec.name}' has no data: send it in raw_input_contents or in contents.{field}")
    names = [wanted.name for wanted in request.outputs]
    outputs = codec.outputs_named(names) if names else list(codec.OUTPUTS)
    return InferCall(read, outputs, raw=bool(raw))


def _read_contents(
    spec: Signature, shape: list[int], contents: pb.InferTensorContents, fields: list[str], limits: codec.Limits
) -> ModelInput:
    field = _CONTENTS_FIELD[spec.datatype]
    wrong = [name for name in fields if name != field]
    if wrong:
        raise TensorError(
            f"input '{spec.name}' is {spec.datatype}: its elements go in contents.{field}, not {wrong[0]}"
        )
    if spec is IMAGE_BYTES:
        return codec.read_elements(spec, shape, contents.bytes_contents, limits)
    return codec.read_values(spec, shape, np.array(contents.fp32_contents, dtype=np.float32), limits)


def encode_response(
    *, model_name: str, model_version: str, request_id: str, outputs: list[Signature], raw: bool,
    probabilities: list[float], labels: list[str], ids: list[str],
) -> pb.ModelInferResponse:
    """probability [N, 1] FP32 and label [N] BYTES, in the order asked for, raw or typed as the input came."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    if ids:
        response.parameters[IDS_PARAMETER].string_param = ",".join(ids)
    for spec in outputs:
        shape, data = codec.raw_output(spec, probabilities, labels)
        tensor = response.outputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
        if raw:
            response.raw_output_contents.append(data)
        elif spec is PROBABILITY:
            tensor.contents.fp32_contents.extend(probabilities)
        else:
            tensor.contents.bytes_contents.extend(label.encode() for label in labels)
    return response
