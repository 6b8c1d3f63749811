"""Where the served model comes from: one file (MODEL_PATH), or the highest version in MODEL_DIR.

MODEL_DIR follows the model-repository layout of TensorFlow Serving and Triton: one folder per version,
named by a whole number, each holding `model.onnx` and its card `model.json`. Higher numbers are newer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.core.model import ModelLoadError

MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class ModelSource:
    path: Path
    version: str | None  # None: a lone MODEL_PATH file; its card's own `version` (or "1") names it


def versions_in(model_dir: Path) -> list[tuple[int, Path]]:
    """(version, model file) for every folder of MODEL_DIR named by a whole number that holds model.onnx."""
    try:
        entries = list(model_dir.iterdir())
    except FileNotFoundError as exc:
        raise ModelLoadError(f"MODEL_DIR {model_dir} does not exist") from exc
    except OSError as exc:
        raise ModelLoadError(f"MODEL_DIR {model_dir} is not readable: {exc.strerror}") from exc
    found = [
        (int(entry.name), entry / MODEL_FILE)
        for entry in entries
        if entry.name.isdigit() and (entry / MODEL_FILE).is_file()
    ]
    return sorted(found)


def latest_source(model_dir: Path) -> ModelSource:
    found = versions_in(model_dir)
    if not found:
        raise ModelLoadError(
            f"MODEL_DIR {model_dir} holds no version: put a model at {model_dir}/1/{MODEL_FILE} (with its .json)"
        )
    version, path = found[-1]
    return ModelSource(path, str(version))
