"""Both engines behind one interface, the choice of (engine, precision) variant, and its refusals."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.core import model as model_module
from service.core.config import SessionSettings, Settings
from service.core.engines import capabilities, openvino_engine
from service.core.engines.capabilities import CpuCapabilities, from_flags
from service.core.engines.selection import choose
from service.core.model import Classifier, ModelLoadError
from service.core.model_card import read_model_card
from service.core.preprocessing import preprocess_bytes
from service.edge.app import create_app
from tests.model_factory import build_tiny_onnx, tiny_probability, with_gain, write_tiny_metadata
from tests.service.helpers import gray_png, metric

ENGINES = [
    "onnxruntime",
    pytest.param(
        "openvino",
        marks=pytest.mark.skipif(not openvino_engine.installed(), reason="openvino is not installed"),
    ),
]
BOTH = from_flags({"avx512f", "avx512_vnni", "avx512_bf16"})
NONE = CpuCapabilities()
VNNI_ONLY = from_flags({"avx512f", "avx512_vnni"})
# The "int8" file of these tests is the tiny graph with gain 7 instead of 8: distinguishable answers.
INT8_GAIN = 7.0


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def variant(engine: str, precision: str, file: str, sha256: str, accuracy: float) -> dict[str, object]:
    return {"engine": engine, "precision": precision, "file": file, "sha256": sha256, "accuracy": accuracy,
            "roc_auc": 0.9, "max_probability_difference": 0.01, "images": 100}


@pytest.fixture
def variant_model(tmp_path: Path) -> Path:
    """model.onnx (fp32) and model.int8.onnx, with a card recording five variants; int8 within the gate,
    bf16 outside it (0.6 point below fp32)."""
    fp32 = build_tiny_onnx(tmp_path / "model.onnx")
    int8 = with_gain(fp32, INT8_GAIN, tmp_path / "model.int8.onnx")
    variants = [
        variant("onnxruntime", "fp32", "model.onnx", sha(fp32), 0.900),
        variant("onnxruntime", "int8", "model.int8.onnx", sha(int8), 0.897),
        variant("openvino", "fp32", "model.onnx", sha(fp32), 0.900),
        variant("openvino", "bf16", "model.onnx", sha(fp32), 0.894),
        variant("openvino", "int8", "model.int8.onnx", sha(int8), 0.896),
    ]
    write_tiny_metadata(fp32, test_metrics={"accuracy": 0.9}, variants=variants)
    return fp32


def pick(model: Path, engine: str, precision: str, cpu: CpuCapabilities,
         installed: tuple[str, ...] = ("onnxruntime", "openvino")) -> tuple[str, str, str]:
    choice = choose(engine, precision, model, read_model_card(model.with_suffix(".json")), cpu, installed)
    return choice.engine, choice.precision, choice.model_path.name


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_runs_the_tiny_model_like_its_definition(tiny_model_path: Path, engine: str) -> None:
    classifier = Classifier.load(tiny_model_path, SessionSettings(), engine=engine, precision="fp32")
    batch = np.random.default_rng(0).uniform(0, 255, (5, 100, 100, 1)).astype(np.float32)
    np.testing.assert_allclose(classifier.predict(batch), tiny_probability(batch), atol=1e-5)
    assert classifier.warm_up((1, 8)) > 0
    described = classifier.describe()
    assert (described["engine"], described["precision"]) == (engine, "fp32")
    assert described["runtime"]["threads"] >= 1


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_infers_from_many_threads_at_once_like_one_run(tiny_model_path: Path, engine: str) -> None:
    """The direct path calls infer from every worker thread; each image must get its own answer."""
    classifier = Classifier.load(tiny_model_path, SessionSettings(), engine=engine, precision="fp32")
    images = np.random.default_rng(1).uniform(0, 255, (64, 1, 100, 100, 1)).astype(np.float32)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda x: classifier.infer(x)[0], images))
    np.testing.assert_allclose(answers, tiny_probability(images[:, 0]), atol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_answers_alike_after_releasing_what_a_batch_grew(tiny_model_path: Path, engine: str) -> None:
    classifier = Classifier.load(tiny_model_path, SessionSettings(), engine=engine, precision="fp32")
    images = np.random.default_rng(2).uniform(0, 255, (8, 100, 100, 1)).astype(np.float32)
    before = classifier.predict(images)
    classifier.release_memory()
    np.testing.assert_allclose(classifier.predict(images[:1]), before[:1], atol=1e-6)
    np.testing.assert_allclose(classifier.infer(images[1:2]), before[1:2], atol=1e-6)
    np.testing.assert_allclose(classifier.predict(images), before, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_refuses_a_wrong_signature_with_the_same_message(tmp_path: Path, engine: str) -> None:
    path = write_tiny_metadata(build_tiny_onnx(tmp_path / "model.onnx", input_shape=("N", 64, 64, 1)))
    with pytest.raises(ModelLoadError, match=r"takes float32 \[\?, 64, 64, 1\]; the service needs"):
        Classifier.load(path.with_suffix(".onnx"), SessionSettings(), engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_refuses_bytes_that_are_not_onnx_with_the_same_message(tmp_path: Path, engine: str) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    write_tiny_metadata(path)
    with pytest.raises(ModelLoadError, match=rf"^model file {re.escape(str(path))} is not a loadable ONNX model"):
        Classifier.load(path, SessionSettings(), engine=engine)


@pytest.mark.skipif(not openvino_engine.installed(), reason="openvino is not installed")
def test_a_model_that_openvino_serves_never_imports_onnxruntime(tiny_model_path: Path) -> None:
    """onnxruntime and its checking session were 26 MiB of RSS at ready (BENCHMARKS.md)."""
    script = (
        "import sys; from pathlib import Path; from service.core.config import SessionSettings; "
        "from service.core.model import Classifier; "
        f"c = Classifier.load(Path({str(tiny_model_path)!r}), SessionSettings(), engine='openvino', precision='fp32'); "
        "c.warm_up((1, 2)); print(c.engine.name, 'onnxruntime' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["openvino", "False"], done.stderr


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\nprocessor\t: 1\n")
    assert capabilities.detect(cpuinfo) == from_flags({"fpu", "sse", "avx2", "avx512f", "avx512_vnni"})
    assert (capabilities.detect(cpuinfo).int8, capabilities.detect(cpuinfo).bf16) == (True, False)
    assert capabilities.detect(tmp_path / "absent") == NONE
    assert from_flags({"amx_bf16", "amx_int8"}) == CpuCapabilities(True, True, frozenset({"amx_bf16", "amx_int8"}))


@pytest.mark.parametrize(
    ("engine", "cpu", "installed", "expected"),
    [
        ("auto", BOTH, ("onnxruntime", "openvino"), ("openvino", "int8", "model.int8.onnx")),
        ("auto", BOTH, ("onnxruntime",), ("onnxruntime", "int8", "model.int8.onnx")),
        ("onnxruntime", VNNI_ONLY, ("onnxruntime", "openvino"), ("onnxruntime", "int8", "model.int8.onnx")),
        # No VNNI: INT8 would not be faster; bf16 is outside the gate, so fp32.
        ("openvino", NONE, ("onnxruntime", "openvino"), ("openvino", "fp32", "model.onnx")),
        ("onnxruntime", NONE, ("onnxruntime", "openvino"), ("onnxruntime", "fp32", "model.onnx")),
    ],
    ids=["ov-vnni-bf16", "ort-only-installed", "ort-vnni", "ov-no-vnni", "ort-no-vnni"],
)
def test_auto_picks_the_fastest_native_variant_within_the_gate(
    variant_model: Path, engine: str, cpu: CpuCapabilities, installed: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert pick(variant_model, engine, "auto", cpu, installed) == expected


def test_auto_takes_bf16_when_int8_is_not_native_and_bf16_is_within_the_gate(variant_model: Path) -> None:
    card = json.loads(variant_model.with_suffix(".json").read_text())
    card["variants"][3]["accuracy"] = 0.898
    variant_model.with_suffix(".json").write_text(json.dumps(card))
    bf16_only = from_flags({"avx512_bf16"})
    assert pick(variant_model, "openvino", "auto", bf16_only) == ("openvino", "bf16", "model.onnx")


def test_a_variant_outside_the_gate_is_refused_with_one_line(
    variant_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.core.model"):
        classifier = Classifier.load(
            variant_model, SessionSettings(), engine="onnxruntime", precision="auto", cpu=NONE
        )
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == [
        "precision int8 on onnxruntime refused: this CPU lacks AVX2 or VNNI (avx2, avx512_vnni, avx_vnni or "
        "amx_int8), so it would not run faster than fp32; PRECISION=int8 serves it anyway"
    ]
    assert classifier.engine.precision == "fp32"

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="service.core.model"):
        pick_bf16 = choose("openvino", "auto", variant_model, read_model_card(variant_model.with_suffix(".json")),
                           from_flags({"avx512_bf16"}), ("onnxruntime", "openvino"))
    assert pick_bf16.precision == "fp32"
    [gate_line] = [note for note in pick_bf16.notes if "bf16" in note]
    assert "\n" not in gate_line
    assert re.search(r"held-out accuracy 0\.8940 is 0\.60 points below fp32's 0\.9000 \(gate: 0\.5 points\)", gate_line)


def test_an_explicit_precision_serves_outside_the_gate_with_a_warning(variant_model: Path) -> None:
    choice = choose("openvino", "bf16", variant_model, read_model_card(variant_model.with_suffix(".json")),
                    BOTH, ("onnxruntime", "openvino"))
    assert (choice.precision, choice.notes) == ("bf16", ())
    assert choice.warnings == (
        "PRECISION=bf16 set explicitly although held-out accuracy 0.8940 is 0.60 points below fp32's 0.9000 "
        "(gate: 0.5 points)",
    )


@pytest.mark.parametrize(
    ("engine", "precision", "installed", "message"),
    [
        ("onnxruntime", "bf16", ("onnxruntime",), r"^PRECISION=bf16 is not available on ENGINE=onnxruntime; use "
                                                  r"ENGINE=openvino$"),
        ("openvino", "fp32", ("onnxruntime",),
         r"^ENGINE=openvino is not installed: pip install openvino \(a dependency of the service\)"),
    ],
)
def test_impossible_settings_are_refused_with_one_line(
    variant_model: Path, engine: str, precision: str, installed: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        pick(variant_model, engine, precision, BOTH, installed)


def test_an_unrecorded_variant_is_refused_and_auto_serves_the_file(tiny_model_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"^PRECISION=int8: .*model\.json records no int8 variant for "
                                             r"onnxruntime; run python -m training\.variants --model "):
        pick(tiny_model_path, "onnxruntime", "int8", BOTH)
    assert pick(tiny_model_path, "onnxruntime", "auto", BOTH) == ("onnxruntime", "fp32", "model.onnx")


def test_a_variant_file_that_differs_from_its_card_is_refused(variant_model: Path) -> None:
    card = json.loads(variant_model.with_suffix(".json").read_text())
    card["variants"][1]["sha256"] = "0" * 64
    variant_model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"model\.int8\.onnx does not match its metadata .*model\.json"):
        Classifier.load(variant_model, SessionSettings(), engine="onnxruntime", precision="int8", cpu=BOTH)


@pytest.mark.parametrize("engine", ENGINES)
def test_http_answers_what_the_auto_variant_answers_offline(
    variant_model: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_module, "detect", lambda: BOTH)
    offline = Classifier.load(variant_model, SessionSettings(), engine=engine, precision="auto")
    assert offline.engine.precision == "int8"
    settings = Settings(model_path=variant_model, engine=engine, precision="auto")
    data = [gray_png(level) for level in (30, 128, 230)]
    with TestClient(create_app(settings)) as client:
        body = client.post("/predict", files=[("files", (f"{i}.png", d, "image/png")) for i, d in enumerate(data)])
        assert body.status_code == 200, body.text
        served = client.get("/model").json()
        info = metric(client, "model_info", engine=engine, precision="int8")
    batch = np.stack([preprocess_bytes(d) for d in data])
    http = [p["probability"] for p in body.json()["predictions"]]
    np.testing.assert_allclose(http, offline.predict(batch), atol=1e-6)
    np.testing.assert_allclose(http, tiny_probability(batch, INT8_GAIN), atol=1e-5)
    int8_sha, card_sha = sha(variant_model.with_name("model.int8.onnx")), sha(variant_model)
    assert body.json()["model"] == {"id": int8_sha, "card_sha256": card_sha, "name": "tiny-test-model",
                                    "version": "1", "engine": engine, "precision": "int8", "flip_averaged": False}
    assert (served["engine"], served["precision"], served["id"]) == (engine, "int8", body.json()["model"]["id"])
    # The answer and GET /model name the same two files, each labelled.
    assert served["identity"] == {"served_file": "model.int8.onnx", "served_sha256": int8_sha, "card_sha256": card_sha}
    assert info == 1.0


def test_auto_passes_over_a_variant_whose_file_is_absent(variant_model: Path) -> None:
    variant_model.with_name("model.int8.onnx").unlink()
    choice = choose("onnxruntime", "auto", variant_model, read_model_card(variant_model.with_suffix(".json")),
                    BOTH, ("onnxruntime",))
    assert (choice.precision, choice.model_path.name) == ("fp32", "model.onnx")
    assert any(note.startswith("precision int8 on onnxruntime refused: its file ") for note in choice.notes)


@pytest.mark.skipif(not openvino_engine.installed(), reason="openvino is not installed")
@pytest.mark.parametrize(("threads", "streams"), [(1, 1), (2, 2)])
def test_openvino_splits_a_batch_across_its_streams_and_answers_in_order(
    tiny_model_path: Path, threads: int, streams: int
) -> None:
    engine = openvino_engine.load(tiny_model_path.read_bytes(), tiny_model_path, "fp32", threads)
    assert engine.describe()["streams"] == streams
    # Sizes below, at and above the stream count, and one that does not divide evenly.
    for size in (1, 2, 3, 7):
        batch = np.random.default_rng(size).uniform(0, 255, (size, 100, 100, 1)).astype(np.float32)
        answers = engine.run(batch)
        assert answers.shape == (size,)
        np.testing.assert_allclose(answers, tiny_probability(batch), atol=1e-5)
        np.testing.assert_allclose(answers, [engine.run(batch[i : i + 1])[0] for i in range(size)], atol=1e-6)
