"""Inference engines behind one small interface (`Engine`: run a batch, describe), and the choice of
which (engine, precision) variant serves. Nothing outside this package knows which engine runs."""

from __future__ import annotations

from pathlib import Path

from service.core.config import SessionSettings
from service.core.engines import openvino_engine, ort_engine
from service.core.engines.base import (
    INPUT_SHAPE,
    Engine,
    EngineName,
    EngineUnavailableError,
    ModelLoadError,
    Precision,
    warm_up,
)
from service.core.engines.capabilities import CpuCapabilities, detect
from service.core.engines.selection import Choice, choose, installed_engines

__all__ = [
    "INPUT_SHAPE", "Choice", "CpuCapabilities", "Engine", "EngineName", "EngineUnavailableError", "ModelLoadError",
    "Precision", "choose", "detect", "installed_engines", "load_engine", "warm_up",
]


def load_engine(
    name: EngineName, data: bytes, path: Path, precision: Precision, threads: int, session: SessionSettings
) -> Engine:
    """The engine `name` over the file's bytes; raises ModelLoadError naming the file."""
    if name == openvino_engine.NAME:
        return openvino_engine.load(data, path, precision, threads)
    return ort_engine.load(data, path, precision, threads, session)
