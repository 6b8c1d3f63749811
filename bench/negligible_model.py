"""A model that costs microseconds, with the service's signature and a valid card: what the service adds to
a request shows once the model is taken out of the picture (bench.overhead). Built here rather than taken
from the tests' factory, so bench depends on nothing under tests/."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper


def write_negligible_model(path: Path) -> Path:
    """(N, 100, 100, 1) float32 -> sigmoid(mean / 255 - 0.5) as (N, 1); writes path and its card."""
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0),
        helper.make_node("Div", ["mean", "c255"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "half"], ["centred"]),
        helper.make_node("Sigmoid", ["centred"], ["p"]),
        helper.make_node("Unsqueeze", ["p", "one"], ["probability"]),
    ]
    initializers = [
        helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
        helper.make_tensor("c255", TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
    ]
    graph = helper.make_graph(
        nodes, "negligible",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 100, 100, 1])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
        initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    card = {
        "name": "negligible", "class_names": ["functional", "defective"], "threshold": 0.5,
        "input": {"name": "input", "shape": [None, 100, 100, 1], "dtype": "float32"},
        "output": {"shape": [None, 1], "dtype": "float32"},
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(card))
    return path
