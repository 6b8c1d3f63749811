"""The classifier: the model card, the file's checks, and the engine that runs it (`service.core.engines`)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from service.core.config import SessionSettings
from service.core.cpu import available_cpus
from service.core.engines import (
    INPUT_SHAPE,
    Choice,
    CpuCapabilities,
    Engine,
    EngineUnavailableError,
    ModelLoadError,
    choose,
    detect,
    installed_engines,
    load_engine,
    warm_up,
)
from service.core.engines.ort_engine import NAME as ORT_NAME
from service.core.failures import one_line
from service.core.model_card import ModelCard, ModelCardError, card_path_for, read_model_card

__all__ = ["INPUT_SHAPE", "Classifier", "ModelLoadError"]
log = logging.getLogger(__name__)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model file {path} does not exist") from exc
    except OSError as exc:
        raise ModelLoadError(f"model file {path} is not readable: {exc.strerror}") from exc


class FileReads:
    """The files one load reads, each opened once: the bytes hashed against the card are the bytes the engine
    loads (a file replaced between a check and a second read would otherwise be served unchecked)."""

    def __init__(self) -> None:
        self._read: dict[Path, bytes] = {}
        self._hashes: dict[Path, str] = {}

    def bytes(self, path: Path) -> bytes:
        if path not in self._read:
            self._read[path] = _read(path)
        return self._read[path]

    def sha256(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = _sha256(self.bytes(path))
        return self._hashes[path]


def check_recorded_hashes(
    card: ModelCard, card_path: Path, model_path: Path, files: FileReads | None = None
) -> None:
    """Every sha256 the card records (its own file's and each variant's) matches that file, whichever file
    will serve: a card that contradicts any of its files describes another export. A variant whose file is
    absent is left to the selection, which passes it over."""
    files = files or FileReads()
    recorded = [(model_path, card.sha256)] + [(model_path.parent / v.file, v.sha256) for v in card.variants or []]
    for path, expected in recorded:
        if expected is None or not path.is_file():
            continue
        if files.sha256(path) != expected.lower():
            raise ModelLoadError(
                f"model file {path} does not match its metadata {card_path} (sha256 differs): the card and "
                "its files come from different exports; copy the model's folder as training wrote it"
            )


def serving_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """The shapes to warm up for serving: a lone request (batch 1) and the largest batch the batcher forms."""
    return tuple(sorted({1, max_batch_size}))


class Classifier:
    """A loaded, checked and warmed model with its card; which engine runs it is `engine.describe()`."""

    def __init__(self, engine: Engine, metadata: ModelCard, model_id: str, choice: Choice | None = None) -> None:
        self.engine = engine
        self.metadata = metadata
        self.model_id = model_id
        self.choice = choice
        self.path = choice.model_path if choice is not None else None

    @classmethod
    def load(
        cls, model_path: Path, settings: SessionSettings, *, engine: str = "auto", precision: str = "auto",
        cpu: CpuCapabilities | None = None, flip_averaged: bool = False, threads: int | None = None,
    ) -> Classifier:
        """The card beside `model_path` says which variants exist; ENGINE/PRECISION and the CPU pick one.
        `flip_averaged` (FLIP_AVERAGED) serves the card's flip-averaged file instead, chosen among its own
        card's variants the same way. `threads`: the engine's threads (OpenVINO's, and onnxruntime's where the
        session settings leave them auto); default the CPUs this container may use."""
        if not model_path.is_file():
            raise ModelLoadError(
                f"model file {model_path} does not exist: set MODEL_PATH to a model.onnx with its model.json "
                "beside it (the CLIs also take --model)"
            )
        metadata_path = card_path_for(model_path)
        try:
            metadata = read_model_card(metadata_path)
        except ModelCardError as exc:
            raise ModelLoadError(str(exc)) from exc
        if flip_averaged and not metadata.flip_averaged:
            if metadata.flip_averaged_variant is None:
                raise ModelLoadError(
                    f"FLIP_AVERAGED=true but {metadata_path} records no flip-averaged variant: train with "
                    "--tta (it writes model.tta.onnx beside the model), or unset FLIP_AVERAGED"
                )
            averaged = model_path.parent / metadata.flip_averaged_variant.file
            log.info("FLIP_AVERAGED: serving %s, the mean over four flips (4x the compute of %s)",
                     averaged, model_path.name)  # fmt: skip
            return cls.load(averaged, settings, engine=engine, precision=precision, cpu=cpu, threads=threads)
        files = FileReads()
        check_recorded_hashes(metadata, metadata_path, model_path, files)
        declared = metadata.input.shape or [None, *INPUT_SHAPE]
        cpu = cpu or detect()
        choice = choose(engine, precision, model_path, metadata, cpu, installed_engines())
        try:
            runner, model_id = cls._open(choice, metadata_path, settings, threads, files)
        except EngineUnavailableError as exc:
            if engine != "auto" or choice.engine == ORT_NAME:
                raise
            # OpenVINO is the default, onnxruntime the fallback wherever OpenVINO cannot load (its package does
            # not import on this machine, or it cannot compile the file); ENGINE=openvino keeps this an error.
            try:
                choice = choose(ORT_NAME, precision, model_path, metadata, cpu, (ORT_NAME,))
            except ModelLoadError:
                raise exc from None
            log.warning("%s; serving it on onnxruntime instead (ENGINE=openvino makes this an error)", exc)
            runner, model_id = cls._open(choice, metadata_path, settings, threads, files)
        if tuple(declared[1:]) != INPUT_SHAPE:
            raise ModelLoadError(f"metadata {metadata_path} declares input {metadata.input}, not (N, 100, 100, 1)")
        return cls(runner, metadata, model_id, choice)

    @staticmethod
    def _open(
        choice: Choice, metadata_path: Path, settings: SessionSettings, threads: int | None, files: FileReads
    ) -> tuple[Engine, str]:
        """The chosen file read, checked against its recorded sha256 and loaded on the chosen engine."""
        for note in choice.notes:
            log.info("%s", note)
        for warning in choice.warnings:
            log.warning("%s", warning)
        data = files.bytes(choice.model_path)
        model_id = files.sha256(choice.model_path)
        if choice.sha256 and choice.sha256.lower() != model_id:
            raise ModelLoadError(
                f"model file {choice.model_path} does not match its metadata {metadata_path} (sha256 differs)"
            )
        runner = load_engine(
            choice.engine, data, choice.model_path, choice.precision, threads or available_cpus(), settings
        )
        return runner, model_id

    def describe(self) -> dict[str, object]:
        """The card as written (unset defaults left out), the served file's sha256 and the engine: GET /model."""
        served = self.engine.describe()
        return {
            **self.metadata.model_dump(mode="json", exclude_unset=True),
            "id": self.model_id,
            "identity": self.identity(),
            "positive_class": self.metadata.positive,
            "engine": served["engine"],
            "precision": served["precision"],
            "flip_averaged": self.metadata.flip_averaged,
            "runtime": served,
        }

    def identity(self) -> dict[str, str | None]:
        """Both hashes, labelled: the file that answers (a precision variant's, e.g. model.int8.onnx) and the
        file the card describes (model.onnx, the sha256 models/README.md gives); equal when fp32 is served."""
        return {
            "served_file": self.path.name if self.path is not None else None,
            "served_sha256": self.model_id,
            "card_sha256": self.metadata.sha256,
        }

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 100, 100, 1) float32 raw pixels -> (N,) positive-class probabilities."""
        return self.engine.run(batch)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """As predict, safe from many threads at once (the direct request path)."""
        return self.engine.infer(batch)

    def release_memory(self) -> None:
        """Frees what the engine keeps for batch shapes run so far (no inference may run meanwhile)."""
        self.engine.release_memory()

    def warm_up(self, batch_sizes: tuple[int, ...]) -> float:
        """Runs each batch size once so the first user request does not pay for allocation. A file that loads
        but fails when run (a Reshape that cannot hold) fails here, as ModelLoadError naming the file."""
        try:
            return warm_up(self.predict, batch_sizes)
        except ModelLoadError as exc:
            raise ModelLoadError(f"model file {self.path}: {exc}") from exc
        except Exception as exc:  # the engine's own error type (onnxruntime's Fail, OpenVINO's RuntimeError)
            raise ModelLoadError(f"model file {self.path} fails when run (warm-up): {one_line(exc)}") from exc
