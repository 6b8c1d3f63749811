"""A tiny ONNX model with the real signature, built with onnx.helper (no TensorFlow needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASS_NAMES = ("functional", "defective")


def tiny_probability(batch: np.ndarray, gain: float = 8.0) -> np.ndarray:
    """What the tiny model computes: sigmoid(8 * (mean/255 - 0.5)), so brighter means more 'defective'
    (`gain`: what a with_gain copy computes)."""
    mean = batch.reshape(len(batch), -1).mean(axis=1) / 255.0
    return 1.0 / (1.0 + np.exp(-gain * (mean - 0.5)))


def build_tiny_onnx(path: Path, *, input_shape: tuple = ("N", 100, 100, 1), output_width: int = 1) -> Path:
    """input (N,100,100,1) float32 -> ReduceMean -> affine -> Sigmoid -> (N, output_width)."""
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0),
        helper.make_node("Div", ["mean", "c255"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
        helper.make_node("Unsqueeze", ["p", "one"], ["p1"]),
        helper.make_node("Tile", ["p1", "repeats"], ["probability"]),
    ]
    initializers = [
        helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
        helper.make_tensor("c255", TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("gain", TensorProto.FLOAT, [], [8.0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("repeats", TensorProto.INT64, [2], [1, output_width]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", output_width])],
        initializers,
    )
    return save_checked(graph, path)


def save_checked(graph: onnx.GraphProto, path: Path) -> Path:
    """The graph as a checked opset-18 model file that every onnxruntime here loads."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def with_gain(tiny: Path, gain: float, path: Path) -> Path:
    """A copy of the tiny model answering sigmoid(gain * (mean/255 - 0.5)): another variant's file, its answers
    told apart from the original's."""
    graph = onnx.load(tiny)
    for i, tensor in enumerate(graph.graph.initializer):
        if tensor.name == "gain":
            graph.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.array(gain, np.float32), "gain"))
    onnx.save(graph, path)
    return path


def write_tiny_metadata(onnx_path: Path, **overrides: object) -> Path:
    metadata = {
        "name": "tiny-test-model",
        "class_names": list(CLASS_NAMES),
        "threshold": 0.5,
        "input": {"name": "input", "shape": [None, 100, 100, 1], "dtype": "float32"},
        "output": {"shape": [None, 1], "dtype": "float32"},
        "test_metrics": {"accuracy": 1.0},
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        **overrides,
    }
    path = onnx_path.with_suffix(".json")
    path.write_text(json.dumps(metadata))
    return path


def build_onnx_failing_at_run_time(path: Path) -> Path:
    """A file with the real signature that loads but fails when run: its Reshape to (N, -1, 7) cannot hold
    for 10,000 pixels per image. The target shape is computed from the input's own shape, so neither
    onnxruntime's nor OpenVINO's load-time shape inference sees it; the first inference (warm-up) does."""
    nodes = [
        helper.make_node("Shape", ["input"], ["input_shape"], start=0, end=1),
        helper.make_node("Concat", ["input_shape", "sevens"], ["target"], axis=0),
        helper.make_node("Reshape", ["input", "target"], ["rows"]),
        helper.make_node("ReduceMean", ["rows", "axes"], ["mean"], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "one"], ["probability"]),
    ]
    initializers = [
        helper.make_tensor("sevens", TensorProto.INT64, [2], [-1, 7]),
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
    ]
    graph = helper.make_graph(
        nodes,
        "fails-at-run-time",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 100, 100, 1])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
        initializers,
    )
    return save_checked(graph, path)
