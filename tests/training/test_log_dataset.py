"""`dataset --from-log`: judged images into class folders, held-out images left out and counted, idempotent;
and `train --extra-data` adding them to the training part only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.core.quality.records import Answerer, ImageFacts, PredictionRecord
from service.core.quality.store import Store, sqlite_url
from tests.model_factory import build_tiny_onnx, write_tiny_metadata
from training import data as datasets
from training.log_dataset import main

CLASSES = ("bright", "dark")
ANSWERER = Answerer("1", "onnxruntime", "fp32", CLASSES)
SPLIT = {"test_fraction": 0.25, "validation_fraction": 0.15, "seed": 0}


@pytest.fixture
def model(toy_folder: Path, tmp_path: Path) -> Path:
    """A model whose card says it was trained on the toy folder with SPLIT."""
    path = build_tiny_onnx(tmp_path / "model" / "model.onnx")
    write_tiny_metadata(path, class_names=list(CLASSES), dataset={"name": "folder", "split": SPLIT})
    return path


def held_out(toy_folder: Path) -> list[Path]:
    parts = datasets.split(datasets.load_folder(toy_folder, decode=False), 0.25, 0.15, 0)
    return [Path(source) for source in parts.test.sources]


def training_files(toy_folder: Path) -> list[Path]:
    parts = datasets.split(datasets.load_folder(toy_folder, decode=False), 0.25, 0.15, 0)
    return [Path(source) for source in parts.train.sources]


def log_answer(store: Store, id: str, data: bytes | None, verdict: str | None, at: float, *, kept: bool = True) -> None:
    facts = ImageFacts.of(data or b"", keep=kept)
    record = PredictionRecord.of(id, "served", ANSWERER, 0.7, "dark", 0.5, facts)
    store.write([PredictionRecord(**{**record.__dict__, "time": at})])
    if verdict is not None:
        store.give_verdicts([(id, verdict)], at + 1)


@pytest.fixture
def log_dir(toy_folder: Path, tmp_path: Path) -> Path:
    """A prediction log with every case: held-out images, duplicates, a changed verdict, no bytes, no image."""
    folder = tmp_path / "data"
    store = Store(sqlite_url(folder))
    test, train = held_out(toy_folder), training_files(toy_folder)
    for n, path in enumerate(test[:3]):  # planted: the model's own test images, judged
        log_answer(store, f"test-{n}", path.read_bytes(), path.parent.name, 100.0 + n)
    for n, path in enumerate(train[:4]):
        log_answer(store, f"live-{n}", path.read_bytes(), path.parent.name, 200.0 + n)
    log_answer(store, "again-0", train[0].read_bytes(), train[0].parent.name, 300.0)  # the same image twice
    relabelled = train[1]
    other = CLASSES[1 - CLASSES.index(relabelled.parent.name)]
    log_answer(store, "again-1", relabelled.read_bytes(), other, 400.0)  # judged again later, the other way
    log_answer(store, "no-bytes", train[5].read_bytes(), "bright", 500.0, kept=False)
    log_answer(store, "tensor", np.zeros((100, 100, 1), np.float32).tobytes(), "bright", 600.0)  # a /v2 tensor
    log_answer(store, "unjudged", train[6].read_bytes(), None, 700.0)
    store.close()
    return folder


def written(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_bytes().hex()[:16] for p in sorted(out.rglob("*")) if p.is_file()}


def test_judged_images_land_in_their_verdicts_folder_and_held_out_ones_are_counted(
    log_dir: Path, model: Path, toy_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "extra"
    assert main(["--from-log", str(log_dir), "--out", str(out), "--model", str(model),
                 "--data-dir", str(toy_folder)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    test_hashes = {datasets.file_sha256(path) for path in held_out(toy_folder)}
    files = [p for p in out.rglob("*.png")]
    assert len(files) == 4
    assert not {p.stem for p in files} & test_hashes  # every planted held-out image left out
    assert manifest["counted"] == {"judged_answers": 11, "held_out": 3, "no_image": 1, "not_an_image": 1,
                                    "duplicates": 2, "conflicting_verdicts": 1}
    train = training_files(toy_folder)
    by_sha = {entry["sha256"]: entry for entry in manifest["entries"]}
    first = by_sha[datasets.file_sha256(train[0])]
    assert [a["id"] for a in first["answers"]] == ["live-0", "again-0"]
    relabelled = by_sha[datasets.file_sha256(train[1])]
    assert relabelled["label"] != train[1].parent.name  # the newest verdict wins
    assert (out / relabelled["file"]).read_bytes() == train[1].read_bytes()
    assert manifest["classes"] == {label: sum(e["label"] == label for e in manifest["entries"]) for label in CLASSES
                                   if any(e["label"] == label for e in manifest["entries"])}


def test_the_data_set_command_is_idempotent(log_dir: Path, model: Path, toy_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "extra"
    arguments = ["--from-log", str(log_dir), "--out", str(out), "--model", str(model), "--data-dir", str(toy_folder)]
    assert main(arguments) == 0
    first = written(out)
    times = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(arguments) == 0
    assert written(out) == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == times  # nothing rewritten


def test_a_changed_verdict_moves_the_image(log_dir: Path, model: Path, toy_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "extra"
    arguments = ["--from-log", str(log_dir), "--out", str(out), "--model", str(model), "--data-dir", str(toy_folder)]
    main(arguments)
    image = training_files(toy_folder)[2]
    store = Store(sqlite_url(log_dir))
    other = CLASSES[1 - CLASSES.index(image.parent.name)]
    store.give_verdicts([("live-2", other)], 1000.0)
    store.close()
    main(arguments)
    name = f"{datasets.file_sha256(image)}.png"
    assert (out / other / name).is_file()
    assert not (out / image.parent.name / name).exists()


@pytest.mark.parametrize(("problem", "message"), [
    ("no-log", "predictions.sqlite3 does not exist: pass the service's DATA_DIR"),
    ("no-data-dir", "pass --data-dir with its folder"),
])
def test_the_data_set_command_names_the_fix(
    problem: str, message: str, log_dir: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(tmp_path / "nowhere") if problem == "no-log" else str(log_dir)
    assert main(["--from-log", source, "--out", str(tmp_path / "out"), "--model", str(model)]) == 2
    assert message in capsys.readouterr().err


def test_extra_data_joins_the_training_part_only_less_held_out_images(toy_folder: Path, tmp_path: Path) -> None:
    parts = datasets.split(datasets.load_folder(toy_folder), 0.25, 0.15, 0)
    extra = tmp_path / "extra"
    for n, path in enumerate(training_files(toy_folder)[:3]):
        (extra / path.parent.name).mkdir(parents=True, exist_ok=True)
        (extra / path.parent.name / f"new-{n}.png").write_bytes(path.read_bytes())
    leaked = held_out(toy_folder)[0]
    (extra / leaked.parent.name / "leaked.png").write_bytes(leaked.read_bytes())
    added, record = datasets.with_extra(parts, extra)
    assert len(added.train) == len(parts.train) + 3
    assert (len(added.validation), len(added.test)) == (len(parts.validation), len(parts.test))
    assert record["images"] == 3
    assert record["left_out_test"] == 1
    assert sum(record["class_counts"].values()) == 3


def test_extra_data_with_a_folder_of_another_class_is_refused(toy_folder: Path, tmp_path: Path) -> None:
    parts = datasets.split(datasets.load_folder(toy_folder, decode=False), 0.25, 0.15, 0)
    (tmp_path / "extra" / "cracked").mkdir(parents=True)
    with pytest.raises(datasets.DataError, match=r"subfolders must be classes of the data set, \['bright', 'dark'\]"):
        datasets.with_extra(parts, tmp_path / "extra")


def test_the_card_records_the_extra_data(toy_folder: Path, tmp_path: Path) -> None:
    from training.pipeline import base_metadata, load_data
    from training.settings import DataSettings, TrainSettings

    extra = tmp_path / "extra"
    (extra / "dark").mkdir(parents=True)
    source = training_files(toy_folder)[0]
    (extra / "dark" / "a.png").write_bytes(source.read_bytes())
    (extra / "manifest.json").write_text("{}")
    settings = TrainSettings(data=DataSettings(dataset="folder", data_dir=toy_folder, extra_data=extra))
    loaded = load_data(settings.data, seed=0)
    dataset = base_metadata(settings, loaded, 0.5, "fixed")["dataset"]
    assert dataset["extra"] == {"path": str(extra), "images": 1, "class_counts": {"bright": 0, "dark": 1},
                                "left_out_test": 0, "left_out_validation": 0,
                                "manifest_sha256": datasets.file_sha256(extra / "manifest.json")}
    assert dataset["split"]["test"] == len(held_out(toy_folder))  # the test split is the card's, unchanged
