"""The rows of `predict`, with or without --ray: one per file, its columns, the reasons a file is not read, and
how paths are expanded. Both ways of scoring (`predict_cli` in this process, `predict_ray` on a cluster) use these,
so they write the same rows; `predict_ray` never imports `predict_cli` (an import-linter contract)."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from service.core.failures import ServiceError
from service.core.labels import label_for
from service.core.pipeline import EncodedImage, Pipeline
from service.core.preprocessing import ImageError

COLUMNS = ("path", "probability", "label", "model_version", "error")
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Row:
    path: str
    probability: float | None = None
    label: str | None = None
    model_version: str | None = None
    error: str | None = None

    def as_csv(self) -> list[str]:
        probability = "" if self.probability is None else f"{self.probability:.6f}"
        return [self.path, probability, self.label or "", self.model_version or "", self.error or ""]


def expand(arguments: Iterable[str]) -> Iterator[tuple[Path, str | None]]:
    """Each file to classify, or a path with the reason it cannot be: folders recursively, globs expanded."""
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            yield from ((file, None) for file in sorted(path.rglob("*")) if file.is_file())
        elif path.exists():
            yield path, None
        elif GLOB_CHARS & set(argument):
            matches = sorted(Path(match) for match in glob.glob(argument, recursive=True))
            files = [match for match in matches if match.is_file()]
            if not files:
                yield path, "the pattern matches no file"
            yield from ((file, None) for file in files)
        else:
            yield path, "no such file or folder"


def too_large(max_file_bytes: int) -> str:
    return f"the file is larger than the {max_file_bytes}-byte limit"


def cannot_read(exc: OSError) -> str:
    return f"cannot read the file: {exc.strerror}"


async def classify_bytes(pipeline: Pipeline, shown: str, name: str, data: bytes, threshold: float | None) -> Row:
    """One file's bytes -> its row (`shown` is the path as the row names it, `name` the file name)."""
    try:
        answer = await pipeline.answer([EncodedImage(name, data)], pipeline.deadline())
    except (ImageError, ServiceError) as exc:
        return Row(shown, error=str(exc))
    (probability,) = answer.probabilities
    label = label_for(probability, pipeline.threshold(threshold), answer.model.classifier.metadata.class_names)
    return Row(shown, probability, label, answer.model.version)
