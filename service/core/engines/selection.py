"""Which (engine, precision) variant serves: ENGINE and PRECISION, the card's measured variants and the CPU.

PRECISION=auto takes the fastest variant that this CPU runs natively and whose held-out accuracy is within
GATE_POINTS of fp32's; every variant passed over is one log line saying why. An explicit PRECISION is
served even outside the gate or without native kernels (with a warning line), but never one the card does
not record, since nothing would vouch for its accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from service.core.engines import openvino_engine, ort_engine
from service.core.engines.base import EngineName, ModelLoadError, Precision
from service.core.engines.capabilities import CpuCapabilities
from service.core.model_card import ModelCard, VariantCard

GATE_POINTS = 0.5
# Fastest first. Model alone on the 2-core Zen 4 (BENCHMARKS.md, the engines' rows of two runs): INT8
# 186-327 images/s, OpenVINO bf16 ~155, fp32 ~85; batch-1 latency in the same order on both engines.
SPEED_ORDER: tuple[Precision, ...] = ("int8", "bf16", "fp32")
ENGINE_PRECISIONS: dict[EngineName, tuple[Precision, ...]] = {
    ort_engine.NAME: ort_engine.PRECISIONS,
    openvino_engine.NAME: openvino_engine.PRECISIONS,
}
_NATIVE_NEEDS = {"int8": "AVX2 or VNNI (avx2, avx512_vnni, avx_vnni or amx_int8)", "bf16": "AVX512-BF16 or AMX-BF16"}


@dataclass(frozen=True)
class Choice:
    engine: EngineName
    precision: Precision
    model_path: Path
    sha256: str | None
    notes: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())


def installed_engines() -> tuple[EngineName, ...]:
    return (ort_engine.NAME, openvino_engine.NAME) if openvino_engine.installed() else (ort_engine.NAME,)


def resolve_engine(requested: str, installed: tuple[EngineName, ...]) -> EngineName:
    """auto: OpenVINO when installed (faster alone and for a lone request, BENCHMARKS.md), else onnxruntime."""
    if requested == "auto":
        return openvino_engine.NAME if openvino_engine.NAME in installed else ort_engine.NAME
    if requested not in installed:
        raise ModelLoadError(
            f"ENGINE={requested} is not installed: pip install {requested} (a dependency of the service), "
            "or set ENGINE=auto"
        )
    return requested  # type: ignore[return-value]


def file_precision(card: ModelCard) -> Precision:
    """What a file without recorded variants is: INT8 when training quantised it, else fp32."""
    return "int8" if getattr(card, "quantization", None) else "fp32"


def _reference_accuracy(card: ModelCard, engine: EngineName) -> float | None:
    fp32 = [v for v in card.variants or [] if v.precision == "fp32" and v.accuracy is not None]
    for variant in sorted(fp32, key=lambda v: v.engine != engine):
        return variant.accuracy
    return card.test_metrics.accuracy if card.test_metrics else None


def refusal(variant: VariantCard, reference: float | None, cpu: CpuCapabilities) -> str | None:
    """Why this variant may not serve under PRECISION=auto, or None."""
    if variant.precision in _NATIVE_NEEDS and not getattr(cpu, variant.precision):
        return f"this CPU lacks {_NATIVE_NEEDS[variant.precision]}, so it would not run faster than fp32"
    if variant.precision == "fp32":
        return None
    if variant.accuracy is None or reference is None:
        return "its held-out accuracy is not recorded (python -m training.variants measures it)"
    drop = (reference - variant.accuracy) * 100
    if drop > GATE_POINTS:
        return (
            f"held-out accuracy {variant.accuracy:.4f} is {drop:.2f} points below fp32's {reference:.4f} "
            f"(gate: {GATE_POINTS} points)"
        )
    return None


def _variant(card: ModelCard, engine: EngineName, precision: Precision) -> VariantCard | None:
    return next((v for v in card.variants or [] if v.engine == engine and v.precision == precision), None)


def _chosen(engine: EngineName, variant: VariantCard, model_path: Path, **extra: tuple[str, ...]) -> Choice:
    return Choice(engine, variant.precision, model_path.parent / variant.file, variant.sha256, **extra)


def choose(
    requested_engine: str, requested_precision: str, model_path: Path, card: ModelCard,
    cpu: CpuCapabilities, installed: tuple[EngineName, ...],
) -> Choice:
    engine = resolve_engine(requested_engine, installed)
    if requested_precision != "auto":
        return _explicit(engine, requested_precision, model_path, card, cpu)  # type: ignore[arg-type]
    if not card.variants:
        return Choice(engine, file_precision(card), model_path, card.sha256, notes=(
            f"no precision variants recorded in {model_path.with_suffix('.json')}; serving {model_path.name} "
            f"as it is (python -m training.variants --model {model_path} measures them)",
        ))
    reference = _reference_accuracy(card, engine)
    notes = []
    for precision in SPEED_ORDER:
        if precision not in ENGINE_PRECISIONS[engine]:
            continue
        variant = _variant(card, engine, precision)
        if variant is None:
            notes.append(f"precision {precision} on {engine}: not recorded in the model card")
            continue
        why = refusal(variant, reference, cpu)
        if why is None and not (model_path.parent / variant.file).is_file():
            why = f"its file {model_path.parent / variant.file} is absent"
        if why is None:
            return _chosen(engine, variant, model_path, notes=tuple(notes))
        notes.append(f"precision {precision} on {engine} refused: {why}; PRECISION={precision} serves it anyway")
    # fp32 on this engine was not recorded: the file itself is fp32 (or whatever training made it).
    return Choice(engine, file_precision(card), model_path, card.sha256, notes=tuple(notes))


def _explicit(
    engine: EngineName, precision: Precision, model_path: Path, card: ModelCard, cpu: CpuCapabilities
) -> Choice:
    if precision not in ENGINE_PRECISIONS[engine]:
        others = [name for name, allowed in ENGINE_PRECISIONS.items() if precision in allowed]
        raise ModelLoadError(
            f"PRECISION={precision} is not available on ENGINE={engine}; use ENGINE={'|'.join(others)}"
        )
    variant = _variant(card, engine, precision)
    if variant is None:
        if precision == file_precision(card):
            return Choice(engine, precision, model_path, card.sha256)
        raise ModelLoadError(
            f"PRECISION={precision}: {model_path.with_suffix('.json')} records no {precision} variant for {engine}; "
            f"run python -m training.variants --model {model_path}"
        )
    why = refusal(variant, _reference_accuracy(card, engine), cpu)
    warnings = (f"PRECISION={precision} set explicitly although {why}",) if why else ()
    return _chosen(engine, variant, model_path, warnings=warnings)
