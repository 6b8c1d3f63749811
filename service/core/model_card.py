"""The model card: the one schema of the metadata file that training writes beside every .onnx file.

Training writes it (`training.export.write_metadata`), the service validates it at start-up and the tools
(`training.check_service`, `training.breakdown`, `bench`) read it through `read_model_card`, so a field is
named and typed in one place. Sections the service does not rely on are optional, and unknown fields are
kept, so cards written by older or newer training code still load and are passed through to GET /model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.core.input_stats import InputProfile

CARD_SUFFIX = ".json"


class ModelCardError(ValueError):
    """The card is missing, unreadable or invalid; the message names the file and the fix."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TensorSpec(_Open):
    shape: list[int | None] | None = None
    dtype: str = "float32"


class DataSplit(_Open):
    train: int | None = None
    validation: int | None = None
    test: int | None = None
    test_fraction: float | None = None
    validation_fraction: float | None = None
    seed: int | None = None
    stratified: bool | None = None


class DatasetCard(_Open):
    name: str
    images: int | None = None
    split: DataSplit | None = None


class HeldOutMetrics(_Open):
    accuracy: float
    images: int | None = None
    threshold: float | None = None
    roc_auc: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    confusion_matrix: dict[str, int] | None = None


class VariantCard(_Open):
    """One (engine, precision) way to run the model, measured on the held-out set by `python -m training.variants`."""

    engine: Literal["onnxruntime", "openvino"]
    precision: Literal["fp32", "int8", "bf16"]
    file: str = Field(description="the .onnx file it runs, relative to the card's folder")
    sha256: str | None = Field(None, description="of that file; the service refuses a file that differs")
    accuracy: float | None = Field(None, description="held-out accuracy at the card's threshold")
    roc_auc: float | None = None
    max_probability_difference: float | None = Field(
        None, description="largest |p - p_fp32| over the held-out images, against onnxruntime fp32"
    )
    images: int | None = None
    images_per_s: float | None = Field(None, description="model alone, batch 8, on the machine that measured it")


class FlipAveragedVariant(_Open):
    """The model with the mean over its four flips folded into the graph (same signature, 4x the compute)."""

    file: str = Field(description="the .onnx file, relative to the card's folder; it has its own card")
    threshold: float | None = Field(None, ge=0, le=1)
    test_accuracy: float | None = None


class ModelCard(_Open):
    name: str = "model"
    version: str | None = Field(None, description="the model's own version; MODEL_DIR's folder name wins")
    class_names: tuple[str, str] = Field(description="negative class first, then the positive one")
    positive_class: str | None = Field(
        None, description="the class whose probability the model outputs (class_names[1]); older cards omit it"
    )
    threshold: float = Field(0.5, ge=0, le=1, description="probability at or above which the label is positive")
    sha256: str | None = Field(None, description="of the .onnx file; the service refuses a file that differs")
    input: TensorSpec
    output: TensorSpec
    dataset: DatasetCard | None = None
    test_metrics: HeldOutMetrics | None = None
    input_statistics: InputProfile | None = Field(
        None, description="training inputs' gray-level statistics; the service's drift metrics compare with them"
    )
    variants: list[VariantCard] | None = Field(
        None, description="precision variants with their held-out accuracy; PRECISION=auto chooses among them"
    )
    flip_averaged_variant: FlipAveragedVariant | None = Field(
        None, description="the file training --tta wrote beside this one; FLIP_AVERAGED=true serves it"
    )
    test_time_augmentation: dict[str, Any] | None = Field(
        None, description="set on a flip-averaged file's own card: which flips it averages"
    )

    @model_validator(mode="after")
    def _positive_is_second(self) -> ModelCard:
        if self.positive_class is not None and self.positive_class != self.class_names[1]:
            raise ValueError(
                f"positive_class {self.positive_class!r} must be the second of class_names {list(self.class_names)}"
            )
        return self

    @property
    def positive(self) -> str:
        """The class the output probability is of: p(positive)."""
        return self.class_names[1]

    @property
    def flip_averaged(self) -> bool:
        """Whether the file this card describes answers the mean over each image's four flips (training --tta)."""
        return self.test_time_augmentation is not None


def card_path_for(model_path: Path) -> Path:
    """`models/model.onnx` -> `models/model.json`: the one rule for where a model's card lives."""
    return model_path.with_suffix(CARD_SUFFIX)


def validate_model_card(content: object, path: Path) -> ModelCard:
    """The card, or ModelCardError naming the file and the first field that is wrong."""
    try:
        return ModelCard.model_validate(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ModelCardError(
            f"model metadata {path} is invalid: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from exc


def _card_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelCardError(f"model metadata {path} does not exist (train writes it beside the .onnx)") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelCardError(f"model metadata {path} is not readable JSON: {exc}") from exc


def read_model_card(path: Path) -> ModelCard:
    return validate_model_card(_card_json(path), path)


def update_model_card(path: Path, **sections: object) -> ModelCard:
    """Sets these sections (pydantic models or plain JSON values) of an existing card and keeps every other
    field as written, in its order; the result is validated (start-up's errors) before it is written."""
    raw = _card_json(path)
    if not isinstance(raw, dict):
        raise ModelCardError(f"model metadata {path} is invalid: a card is a JSON object, not {type(raw).__name__}")
    raw.update({
        name: section.model_dump(mode="json") if isinstance(section, BaseModel) else section
        for name, section in sections.items()
    })
    updated = validate_model_card(raw, path)
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return updated
