"""What every inference engine offers the service, and the one error a model that cannot be served raises."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from service.core.preprocessing import INPUT_SIZE

EngineName = Literal["onnxruntime", "openvino"]
Precision = Literal["fp32", "int8", "bf16"]
INPUT_SHAPE = (*INPUT_SIZE, 1)


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message says which file or setting and why."""


class EngineUnavailableError(ModelLoadError):
    """This engine cannot run here (its package does not import) or cannot compile a file that another engine
    reads: under ENGINE=auto the next engine is tried."""


@dataclass(frozen=True)
class Port:
    """One input or output as a file declares it, in the engine-neutral words of the messages: the element type
    ("float32") and the shape, a dimension the file leaves open as "?"."""

    type: str
    shape: tuple[int | str, ...]

    def __str__(self) -> str:
        return f"{self.type} [{', '.join(str(d) for d in self.shape)}]"


def check_signature(path: Path, inputs: Sequence[Port], outputs: Sequence[Port]) -> None:
    """What the file declares, read by whichever engine will run it: the same files refused with the same
    messages on every engine."""
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(f"model {path} must have one input and one output")
    (given,), (returned,) = inputs, outputs
    if given.type != "float32" or len(given.shape) != 4 or tuple(given.shape[1:]) != INPUT_SHAPE:
        raise ModelLoadError(f"model {path} takes {given}; the service needs float32 (N, 100, 100, 1)")
    if returned.type != "float32" or len(returned.shape) != 2 or returned.shape[1] != 1:
        raise ModelLoadError(f"model {path} returns {returned}; expected float32 (N, 1)")


class Engine(Protocol):
    """A loaded model on one runtime: `run` takes (N, 100, 100, 1) float32 raw pixels, returns (N,) probabilities.

    Engines are built by their module's `load(data, precision, threads, ...)`; nothing outside
    `service.core.engines` knows which one runs."""

    name: EngineName
    precision: Precision

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """As run, safe from many threads at once (the direct request path runs one image per worker thread)."""
        ...

    def describe(self) -> dict[str, object]: ...

    def release_memory(self) -> None:
        """Frees the buffers kept for the batch shapes run so far (none may run meanwhile); the next run of a
        shape allocates them again."""
        ...


def warm_up(run: Callable[[np.ndarray], np.ndarray], batch_sizes: tuple[int, ...]) -> float:
    """Runs each batch size once through `run` (an engine's, or whatever wraps it) so the first user request
    does not pay for allocation (or, for OpenVINO, for preparing that input shape)."""
    start = time.perf_counter()
    for size in batch_sizes:
        result = run(np.zeros((size, *INPUT_SHAPE), np.float32))
        if result.shape != (size,) or not np.all(np.isfinite(result)):
            raise ModelLoadError("model warm-up returned malformed or non-finite output")
    return time.perf_counter() - start
