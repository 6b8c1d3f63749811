"""What the prediction log keeps of one prediction: a row per image and per answering version."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Literal

Role = Literal["served", "shadow"]


def new_id() -> str:
    """A UUID4: unguessable, so a verdict can only be posted for a prediction its client was shown."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class ImageFacts:
    """What is kept of the image itself: its sha256 and byte size, and the bytes only when asked for."""

    sha256: str
    size: int
    data: bytes | None = None

    @classmethod
    def of(cls, data: bytes, *, keep: bool = False) -> ImageFacts:
        return cls(hashlib.sha256(data).hexdigest(), len(data), data if keep else None)


@dataclass(frozen=True)
class Answerer:
    """The version that answered and how it ran."""

    version: str
    engine: str
    precision: str
    class_names: tuple[str, str]


@dataclass(frozen=True)
class PredictionRecord:
    id: str
    role: Role
    time: float  # Unix time, seconds
    version: str
    engine: str
    precision: str
    probability: float
    label: str
    threshold: float
    image_sha256: str
    image_bytes: int
    image: bytes | None = None

    @classmethod
    def of(
        cls, id: str, role: Role, answerer: Answerer, probability: float, label: str, threshold: float,
        image: ImageFacts,
    ) -> PredictionRecord:
        return cls(
            id=id, role=role, time=time.time(), version=answerer.version, engine=answerer.engine,
            precision=answerer.precision, probability=float(probability), label=label, threshold=float(threshold),
            image_sha256=image.sha256, image_bytes=image.size, image=image.data,
        )

    def row(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
