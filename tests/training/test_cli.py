"""`train` end to end on a toy folder, and its answers to bad input: one clear line, exit code 2."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.core.preprocessing import PREPROCESSING_DESCRIPTION
from training.cli import main

OPTIONS = [
    "--dataset", "--data-dir", "--validation-data", "--extra-data", "--test-split", "--validation-split",
    "--epochs", "--batch-size", "--learning-rate", "--augment", "--no-augment", "--class-weight",
    "--no-class-weight", "--early-stopping-patience", "--reduce-lr-patience", "--mixed-precision",
    "--seed", "--resume", "--filters", "--quarter-turns", "--no-quarter-turns", "--lr-schedule",
    "--initial-weights", "--out", "--checkpoint-dir", "--threshold", "--export-only",
    "--int8", "--no-int8", "--warmup-epochs", "--soft-targets", "--no-soft-targets", "--ema", "--no-ema",
    "--ema-momentum", "--jitter", "--recalibrate-batchnorm", "--no-recalibrate-batchnorm", "--cv", "--cv-only",
    "--compare-with", "--tta", "--no-tta", "--positive-class", "--name",
]  # fmt: skip


@dataclass(frozen=True)
class Run:
    code: int
    out: Path
    argv: list[str]
    stdout: str
    data_dir: Path


@pytest.fixture(scope="module")
def trained(toy_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One whole `train` run with the tiny variant: fit, evaluate, plot, export, verify, quantize."""
    out = tmp_path_factory.mktemp("train") / "out"
    argv = ["--dataset", "folder", "--data-dir", str(toy_folder), "--filters", "8,8,8", "--epochs", "2",
            "--out", str(out), "--int8"]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    return Run(code, out, argv, stdout.getvalue(), toy_folder)


def metadata(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_train_writes_the_model_its_metadata_and_plots(trained: Run) -> None:
    assert trained.code == 0
    names = {p.name for p in trained.out.iterdir()}
    assert {"model.onnx", "model.json", "model.int8.onnx", "model.int8.json", "training_curves.png",
            "roc_curve.png", "confusion_matrix.png", "checkpoints"} <= names  # fmt: skip
    for plot in ("training_curves.png", "roc_curve.png", "confusion_matrix.png"):
        with Image.open(trained.out / plot) as image:
            assert image.format == "PNG"
    assert trained.stdout.splitlines()[-1].startswith("held-out test accuracy ")
    assert f"wrote {trained.out / 'model.onnx'} and {trained.out / 'model.json'}" in trained.stdout


@pytest.mark.slow
def test_metadata_describes_the_served_input_and_preprocessing(trained: Run) -> None:
    import onnxruntime as ort

    meta = metadata(trained.out / "model.json")
    session = ort.InferenceSession(str(trained.out / "model.onnx"), providers=["CPUExecutionProvider"])

    assert meta["input"] == {"name": "input", "shape": [None, 100, 100, 1], "dtype": "float32"}
    assert session.get_inputs()[0].name == meta["input"]["name"]
    assert session.get_inputs()[0].shape[1:] == meta["input"]["shape"][1:]
    assert meta["output"]["shape"] == [None, 1]
    assert meta["class_names"] == ["bright", "dark"]
    assert meta["output"]["meaning"] == "probability of class 'dark'"
    assert meta["threshold"] == 0.5
    assert meta["preprocessing"] == json.loads(json.dumps(PREPROCESSING_DESCRIPTION))
    assert meta["preprocessing"]["resize_filter"] == "bilinear"
    assert meta["preprocessing"]["size"] == [100, 100]


@pytest.mark.slow
def test_metadata_records_the_data_set_and_its_stratified_split(trained: Run) -> None:
    dataset = metadata(trained.out / "model.json")["dataset"]

    assert dataset["name"] == "folder"
    assert dataset["source"] == str(trained.data_dir)
    assert dataset["images"] == 128
    assert dataset["class_counts"] == {"bright": 64, "dark": 64}
    split = dataset["split"]
    assert split["test"] == math.ceil(0.25 * 128)
    assert split["validation"] == math.ceil(0.15 * (128 - split["test"]))
    assert split["train"] + split["validation"] + split["test"] == 128
    assert (split["test_fraction"], split["validation_fraction"], split["seed"], split["stratified"]) == (
        0.25, 0.15, 42, True,
    )  # fmt: skip


@pytest.mark.slow
def test_metadata_test_metrics_are_those_of_the_onnx_model_on_the_held_out_split(trained: Run) -> None:
    from training.data import load_folder, split
    from training.evaluate import binary_metrics
    from training.export import onnx_predict

    meta = metadata(trained.out / "model.json")
    test = split(load_folder(trained.data_dir), 0.25, 0.15, seed=42).test

    metrics = meta["test_metrics"]
    assert {"accuracy", "roc_auc", "precision", "recall", "f1", "confusion_matrix", "images", "threshold"} <= set(
        metrics
    )
    assert set(metrics["confusion_matrix"]) == {"tn", "fp", "fn", "tp"}
    assert sum(metrics["confusion_matrix"].values()) == metrics["images"] == len(test)
    recomputed = binary_metrics(test.y, onnx_predict(trained.out / "model.onnx", test.x)[:, 0], 0.5)
    assert metrics["confusion_matrix"] == recomputed["confusion_matrix"]
    for key in ("accuracy", "roc_auc", "precision", "recall"):
        assert metrics[key] == pytest.approx(recomputed[key], abs=1e-6)
    assert meta["keras_test_metrics"]["confusion_matrix"] == metrics["confusion_matrix"]


@pytest.mark.slow
def test_metadata_records_training_export_and_versions(trained: Run) -> None:
    import onnx

    from training.model import make_model

    meta = metadata(trained.out / "model.json")

    training = meta["training"]
    assert training["epochs_requested"] == training["epochs_run"] == 2
    assert len(training["images_per_s_per_epoch"]) == 2
    assert (training["batch_size"], training["learning_rate"], training["optimizer"], training["loss"]) == (
        32, 1e-3, "adam", "binary_crossentropy",
    )  # fmt: skip
    assert (training["augment"], training["class_weight"], training["mixed_precision"]) == (True, False, False)
    assert (training["quarter_turns"], training["lr_schedule"], training["initial_weights"]) == (
        False, "plateau", None,
    )  # fmt: skip
    assert (training["early_stopping_patience"], training["reduce_lr_patience"]) == (10, 4)
    assert training["filters"] == [8, 8, 8]
    assert training["parameters"] == make_model(filters=(8, 8, 8)).count_params()
    assert training["command"] == "train " + " ".join(trained.argv)

    export = meta["export"]
    assert export["max_abs_difference_vs_keras"] < export["tolerance"] == 1e-4
    opsets = {o.domain: o.version for o in onnx.load(str(trained.out / "model.onnx")).opset_import}
    assert opsets[""] == export["opset"] == 17

    for package in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "pillow"):
        assert meta["versions"][package] == version(package)
    assert meta["versions"]["python"].count(".") == 2

    created = datetime.fromisoformat(meta["created"])
    assert created.tzinfo is not None
    assert timedelta(0) <= datetime.now(UTC) - created < timedelta(hours=1)
    assert meta["quantization"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model", "model.int8"])
def test_metadata_names_its_onnx_file_by_sha256(trained: Run, name: str) -> None:
    meta = metadata(trained.out / f"{name}.json")
    onnx_file = trained.out / f"{name}.onnx"

    assert meta["onnx_file"] == onnx_file.name
    assert meta["sha256"] == hashlib.sha256(onnx_file.read_bytes()).hexdigest()


@pytest.mark.slow
def test_int8_model_is_quantized_and_its_metadata_says_how(trained: Run) -> None:
    import onnx

    from training.export import onnx_predict

    fp32, int8 = metadata(trained.out / "model.json"), metadata(trained.out / "model.int8.json")
    graph = onnx.load(str(trained.out / "model.int8.onnx")).graph

    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    quantization = int8["quantization"]
    assert "static QDQ" in quantization["method"]
    assert "per-channel" in quantization["method"]
    assert quantization["calibration_images"] == fp32["dataset"]["split"]["train"]
    assert quantization["fp32_test_accuracy"] == fp32["test_metrics"]["accuracy"]
    assert 0 <= quantization["labels_changed_vs_fp32"] <= fp32["dataset"]["split"]["test"]
    assert int8["test_metrics"]["images"] == fp32["test_metrics"]["images"]
    unchanged = {"quantization", "test_metrics", "onnx_file", "sha256"}
    assert {k: v for k, v in int8.items() if k not in unchanged} == {
        k: v for k, v in fp32.items() if k not in unchanged
    }
    probability = onnx_predict(trained.out / "model.int8.onnx", np.zeros((2, 100, 100, 1), np.float32))
    assert probability.shape == (2, 1)


@pytest.mark.slow
def test_initial_weights_start_the_fit_from_an_earlier_run(trained: Run, tmp_path: Path) -> None:
    from training.model import make_model

    earlier = trained.out / "checkpoints" / "best.weights.h5"
    out = tmp_path / "out"
    # A learning rate too small to move anything: the fit must end where the earlier run did.
    argv = ["--dataset", "folder", "--data-dir", str(trained.data_dir), "--filters", "8,8,8", "--epochs", "1",
            "--learning-rate", "1e-12", "--lr-schedule", "cosine", "--initial-weights", str(earlier),
            "--out", str(out)]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0

    kernels = []
    for weights in (earlier, out / "checkpoints" / "best.weights.h5"):
        model = make_model(filters=(8, 8, 8))
        model.load_weights(str(weights))
        kernels.append([layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")])
    for before, after in zip(*kernels, strict=True):
        np.testing.assert_allclose(after, before, atol=1e-6)
    training = metadata(out / "model.json")["training"]
    assert training["initial_weights"] == {
        "file": str(earlier), "sha256": hashlib.sha256(earlier.read_bytes()).hexdigest(),
    }  # fmt: skip
    assert training["lr_schedule"] == "cosine"


def make_folders(root: Path, *entries: str) -> Path:
    """Entries below root: 'x/' an empty folder, 'x/bad.png' junk bytes, any other name a small PNG."""
    for entry in entries:
        path = root / entry
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry.endswith("/"):
            path.mkdir(exist_ok=True)
        elif path.name.startswith("bad"):
            path.write_bytes(b"not an image")
        else:
            Image.new("L", (20, 20), 100).save(path, "PNG")
    return root


def data_error_cases() -> list[pytest.param]:
    """(arguments for tmp_path, expected error line after 'train: error: ')."""
    good = [f"{label}/{i}.png" for label in ("a", "b") for i in range(4)]
    enough = [f"{label}/{i}.png" for label in ("a", "b") for i in range(12)]  # splits into all three parts
    return [
        pytest.param(lambda t: ["--data-dir", str(t / "missing")], r"data folder .*/missing does not exist",
                     id="missing-folder"),
        pytest.param(lambda t: ["--data-dir", str(make_folders(t / "data", "only/a.png"))],
                     r"data folder .*/data must hold exactly two class subfolders, found 1: \['only'\]",
                     id="one-class-only"),
        pytest.param(lambda t: ["--data-dir", str(make_folders(t / "data", "a/1.png", "b/"))],
                     r"class folder .*/data/b holds no images", id="empty-class-folder"),
        pytest.param(lambda t: ["--data-dir", str(make_folders(t / "data", *good, "b/bad.png"))],
                     r".*/data/b/bad\.png: the bytes are not a decodable image", id="unreadable-image"),
        pytest.param(lambda t: ["--data-dir", str(make_folders(t / "data", *good)), "--test-split", "0.1"],
                     r"cannot split \{'a': 4, 'b': 4\} with test fraction 0\.1", id="split-too-small"),
        pytest.param(lambda t: ["--data-dir", str(make_folders(t / "data", *good)),
                                "--validation-data", str(make_folders(t / "val", "x/1.png", "y/1.png"))],
                     r"validation classes \('x', 'y'\) differ from \('a', 'b'\)", id="validation-classes-differ"),
        pytest.param(lambda t: ["--data-dir", str(make_folders(t / "data", *good)), "--out",
                                str(make_folders(t, "file.png") / "file.png" / "sub")],
                     r"cannot create output folder .*/file\.png/sub: Not a directory", id="out-under-a-file"),
        pytest.param(lambda t: ["--data-dir", str(make_folders(t / "data", *enough)),
                                "--initial-weights", str(make_folders(t, "bad.weights.h5") / "bad.weights.h5")],
                     r"cannot load --initial-weights .*/bad\.weights\.h5: ", id="initial-weights-not-weights"),
        pytest.param(lambda t: ["--data-dir", str(make_folders(t / "data", *good)), "--positive-class", "c",
                                "--test-split", "0.1"],
                     r"--positive-class 'c' is not one of the classes \['a', 'b'\]", id="positive-class-unknown"),
    ]  # fmt: skip


@pytest.mark.parametrize(("arguments", "message"), data_error_cases())
def test_train_answers_unusable_data_with_one_error_line(
    arguments: Callable[[Path], list[str]], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--dataset", "folder", "--out", str(tmp_path / "out"), "--filters", "2", "--epochs", "1",
            *arguments(tmp_path)]  # fmt: skip

    code = main(argv)

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert err.startswith("train: error: ")
    assert re.match(message, err.removeprefix("train: error: ")), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes regardless of permissions")
def test_train_refuses_an_output_folder_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o500)
    data = make_folders(tmp_path / "data", *[f"{label}/{i}.png" for label in ("a", "b") for i in range(4)])
    try:
        code = main(["--dataset", "folder", "--data-dir", str(data), "--out", str(out)])
    finally:
        out.chmod(0o700)

    assert code == 2
    assert capsys.readouterr().err == f"train: error: no write permission on output folder {out}\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["--dataset", "folder"], "--dataset folder needs --data-dir", id="folder-without-dir"),
        pytest.param(["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'", id="dataset"),
        pytest.param(["--test-split", "0"], "--test-split must be between 0 and 1", id="test-split-0"),
        pytest.param(["--test-split", "1"], "--test-split must be between 0 and 1", id="test-split-1"),
        pytest.param(["--validation-split", "1"], r"--validation-split must be in \[0, 1\)", id="validation-split"),
        pytest.param(["--epochs", "0"], "--epochs and --batch-size must be positive", id="epochs"),
        pytest.param(["--batch-size", "0"], "--epochs and --batch-size must be positive", id="batch-size"),
        pytest.param(["--threshold", "1"], "--threshold must be between 0 and 1", id="threshold"),
        pytest.param(["--epochs", "many"], "argument --epochs: invalid int value: 'many'", id="epochs-not-int"),
        pytest.param(["--filters", "8,x"], "argument --filters: expected 1 to 3 positive integers", id="filters-text"),
        pytest.param(["--filters", "0,8"], "argument --filters: expected 1 to 3 positive integers", id="filters-0"),
        pytest.param(["--filters", "8,8,8,8"], "argument --filters: expected 1 to 3 positive", id="filters-4-blocks"),
        pytest.param(
            ["--initial-weights", "/nonexistent/best.weights.h5"],
            "--initial-weights /nonexistent/best.weights.h5 is not a file",
            id="initial-weights-missing",
        ),
        pytest.param(["--lr-schedule", "step"], "argument --lr-schedule: invalid choice: 'step'", id="lr-schedule"),
        pytest.param(["--cv", "1"], r"--cv needs at least 2 folds \(0 turns it off\)", id="cv-1"),
        pytest.param(["--cv-only", "1"], "--cv-only needs --cv K and a count between 1 and K", id="cv-only-alone"),
        pytest.param(["--cv", "3", "--cv-only", "4"], "--cv-only needs --cv K", id="cv-only-too-many"),
        pytest.param(["--ray", "127.0.0.1:6379"], "--ray runs cross-validation folds: it needs --cv K", id="ray-no-cv"),
        pytest.param(["--storage", "/mnt/x"], "--storage and --fold-cpus go with --ray", id="storage-no-ray"),
        pytest.param(["--cv", "2", "--ray", "--fold-cpus", "0"], "--fold-cpus must be positive", id="fold-cpus"),
        pytest.param(["--jitter", "1"], r"--jitter must be in \[0, 1\)", id="jitter"),
        pytest.param(["--ema-momentum", "1"], "--ema-momentum must be between 0 and 1", id="ema-momentum"),
        pytest.param(["--warmup-epochs", "40"], "--warmup-epochs must be at least 0 and fewer than --epochs",
                     id="warmup"),
        pytest.param(["--compare-with", "/nonexistent/model.onnx"],
                     "--compare-with /nonexistent/model.onnx is not a file", id="compare-with-missing"),
        pytest.param(["--no-such-option"], "unrecognized arguments: --no-such-option", id="unknown-option"),
        pytest.param(["--name", "my model"], "argument --name: expected letters, digits", id="name-not-a-url-segment"),
    ],
)
def test_train_rejects_bad_options_before_loading_anything(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "out"), *arguments])

    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "Traceback" not in err
    assert err.splitlines()[0].startswith("usage: train ")
    assert re.match(f"train: error: {message}", err.splitlines()[-1]), err
    assert not (tmp_path / "out").exists()


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])

    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert [option for option in OPTIONS if not re.search(rf"(?<![\w-]){option}(?![\w-])", out)] == []
    text = " ".join(out.split())
    for option, default in (("--epochs EPOCHS", 40), ("--batch-size BATCH_SIZE", 32), ("--seed SEED", 42)):
        assert re.search(rf"{option} [^(]+ \(default: {default}\)", text), f"{option} has no help or default"


@pytest.fixture(scope="module")
def cross_validated(trained: Run, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """--cv 3 with every new recipe switch, compared with the plain run's model, flip-averaged variant written."""
    out = tmp_path_factory.mktemp("cv") / "out"
    argv = ["--dataset", "folder", "--data-dir", str(trained.data_dir), "--filters", "8,8,8", "--epochs", "2",
            "--cv", "3", "--soft-targets", "--ema", "--jitter", "0.1", "--lr-schedule", "cosine",
            "--warmup-epochs", "1", "--recalibrate-batchnorm", "--tta",
            "--compare-with", str(trained.out / "model.onnx"), "--out", str(out)]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    return Run(code, out, argv, stdout.getvalue(), trained.data_dir)


@pytest.mark.slow
def test_cv_chooses_epochs_and_threshold_out_of_fold_and_fits_once_on_every_non_test_image(
    cross_validated: Run,
) -> None:
    assert cross_validated.code == 0
    meta = metadata(cross_validated.out / "model.json")

    split = meta["dataset"]["split"]
    assert split["validation"] == 0
    assert split["train"] + split["test"] == 128
    selection = meta["selection"]
    assert selection["folds"] == 3
    assert selection["folds_run"] == [1, 2, 3]
    assert sum(selection["fold_sizes"]) == split["train"]
    assert (selection["seed"], selection["stratified_on"]) == (42, "label")
    assert selection["covers_every_non_test_image"] is True
    assert selection["images_out_of_fold"] == split["train"]
    assert meta["threshold"] == selection["threshold"]
    assert "out-of-fold" in meta["threshold_selection"]
    training = meta["training"]
    assert training["stopped_after_epochs"] == selection["chosen_epochs"] == training["epochs_run"]
    assert (training["soft_targets"], training["ema_momentum"], training["jitter"]) == (True, 0.995, 0.1)
    assert (training["kept_weights"], training["recalibrate_batchnorm"], training["warmup_epochs"]) == (
        "last", True, 1,
    )  # fmt: skip
    assert {"mean", "std", "per_fold"} <= set(selection["per_fold"]["accuracy"])


@pytest.mark.slow
def test_metadata_reports_training_accuracy_in_inference_mode_an_interval_and_mcnemar(cross_validated: Run) -> None:
    meta = metadata(cross_validated.out / "model.json")

    train = meta["train_metrics_inference_mode"]
    assert train["images"] == meta["dataset"]["split"]["train"]
    assert {"accuracy", "roc_auc", "log_loss"} <= set(train)
    interval = meta["test_metrics"]["accuracy_interval_95"]
    assert interval["low"] <= meta["test_metrics"]["accuracy"] <= interval["high"]
    comparison = meta["comparison_with_previous"]
    assert comparison["model"].endswith("model.onnx")
    mcnemar = comparison["mcnemar_exact"]
    assert mcnemar["images"] == meta["test_metrics"]["images"]
    assert 0 <= mcnemar["p_value"] <= 1


@pytest.mark.slow
def test_flip_averaged_variant_is_written_beside_the_model_with_both_accuracies(cross_validated: Run) -> None:
    import onnxruntime as ort

    plain = metadata(cross_validated.out / "model.json")
    variant = metadata(cross_validated.out / "model.tta.json")

    assert variant["onnx_file"] == "model.tta.onnx"
    assert variant["test_time_augmentation"]["flips"] == ["identity", "horizontal", "vertical", "both"]
    assert variant["test_time_augmentation"]["plain_test_accuracy"] == plain["test_metrics"]["accuracy"]
    assert plain["flip_averaged_variant"]["file"] == "model.tta.onnx"
    assert plain["flip_averaged_variant"]["test_accuracy"] == variant["test_metrics"]["accuracy"]
    assert "variants" not in plain  # main's precision-variant list, written by training.variants
    assert variant["input"] == plain["input"]
    session = ort.InferenceSession(str(cross_validated.out / "model.tta.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input"
    assert session.run(None, {"input": np.zeros((2, 100, 100, 1), np.float32)})[0].shape == (2, 1)


@pytest.mark.slow
def test_cv_only_screens_folds_without_a_final_model_or_the_test_split(
    toy_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"

    code = main(["--dataset", "folder", "--data-dir", str(toy_folder), "--filters", "4", "--epochs", "1",
                 "--cv", "4", "--cv-only", "1", "--out", str(out)])  # fmt: skip

    assert code == 0
    report = json.loads((out / "cv-screening.json").read_text())
    assert report["out_of_fold"]["folds_run"] == [1]
    assert report["out_of_fold"]["covers_every_non_test_image"] is False
    assert not (out / "model.onnx").exists()
    assert capsys.readouterr().out.splitlines()[-1].startswith("out of fold (")

    from training.cv_report import main as cv_report

    assert cv_report(["--checkpoint-dir", str(out / "checkpoints"), "--cv", "4", "--dataset", "folder",
                      "--data-dir", str(toy_folder)]) == 0  # fmt: skip
    reread = json.loads(capsys.readouterr().out)
    assert reread["pooled"] == report["out_of_fold"]["pooled"]
    assert reread["epochs_reached_per_fold"] == {"1": 1}
    assert cv_report(["--checkpoint-dir", str(out / "checkpoints"), "--cv", "3", "--dataset", "folder",
                      "--data-dir", str(toy_folder)]) == 2  # fmt: skip
    assert "holds other folds" in capsys.readouterr().err


@pytest.mark.slow
def test_cv_export_only_reuses_the_folds_and_the_final_weights(cross_validated: Run) -> None:
    before = metadata(cross_validated.out / "model.json")
    folds = sorted((cross_validated.out / "checkpoints" / "cv").glob("fold-*/predictions.npy"))
    stamps = [p.stat().st_mtime_ns for p in folds]
    with contextlib.redirect_stdout(io.StringIO()):
        code = main([*cross_validated.argv, "--export-only"])

    after = metadata(cross_validated.out / "model.json")
    assert code == 0
    assert [p.stat().st_mtime_ns for p in folds] == stamps  # no fold fitted again
    assert after["selection"]["pooled"] == before["selection"]["pooled"]
    assert after["test_metrics"]["confusion_matrix"] == before["test_metrics"]["confusion_matrix"]


def test_ema_without_cv_keeps_the_averaged_weights_not_a_best_checkpoint() -> None:
    from training.cli import parse_args
    from training.pipeline import fit_settings

    assert fit_settings(parse_args(["--ema"])).keep == "last"
    assert fit_settings(parse_args([])).keep == "best"
    assert fit_settings(parse_args(["--cv", "5"])).keep == "last"


@pytest.mark.slow
def test_positive_class_and_name_are_recorded_in_the_card_and_served(
    toy_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from service.core.config import Settings
    from service.edge.app import create_app

    out = tmp_path / "out"
    argv = ["--dataset", "folder", "--data-dir", str(toy_folder), "--filters", "2", "--epochs", "1",
            "--positive-class", "bright", "--name", "toy-cells", "--out", str(out)]  # fmt: skip
    with caplog.at_level("INFO", logger="train"):
        assert main(argv) == 0
    assert "classes: 0 = dark, 1 = bright: the model's probability = p(bright)" in caplog.text
    card = metadata(out / "model.json")
    assert (card["name"], card["class_names"], card["positive_class"]) == ("toy-cells", ["dark", "bright"], "bright")
    # The same split as without the option: which class is positive does not move an image between parts.
    assert card["dataset"]["split"]["test"] == math.ceil(0.25 * 128)
    assert card["test_metrics"]["confusion_matrix"]["tp"] + card["test_metrics"]["confusion_matrix"]["fn"] == 16
    with TestClient(create_app(Settings(model_path=out / "model.onnx"))) as client:
        served = client.get("/model").json()
    assert (served["name"], served["positive_class"]) == ("toy-cells", "bright")


def test_a_missing_training_dependency_is_one_line_naming_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.environment

    real = training.environment.importlib.util.find_spec
    monkeypatch.setattr(
        training.environment.importlib.util, "find_spec", lambda name: None if name == "sklearn" else real(name)
    )
    assert main(["--dataset", "folder", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "train: error: sklearn is not installed; it comes with the training extra: "
        "make train-deps (or: pip install -e '.[train]')\n"
    )
