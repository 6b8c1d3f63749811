"""Here, after the accelerator's search: its weights into the TensorFlow-backed model, exported through the
verified path (tf2onnx from_function, parity with Keras checked), the test split scored once, the rule applied.

    python -m training.accelerator.bring_back --results <the run's files> --out build/accelerator/model

Writes into --out: model.onnx + model.json (the winner fitted on every non-test image), model.ensemble.onnx +
model.ensemble.json (the mean of its fold models, one graph, same signature), recipes.md (every recipe's pooled
out-of-fold figures side by side, for the card) and decision.json (held-out figures, McNemar's test against the
shipped model, the rule's verdict). models/ is not touched: a winner is copied there by hand when the rule
says so (docs/accelerator.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.accelerator.arrays import ArraysError, read_arrays
from training.accelerator.recipes import MCNEMAR_ALPHA, SELECTION_RULE, passes_out_of_fold_bar
from training.data import DataError, LabelledImages
from training.model import make_model

log = logging.getLogger("training.accelerator.bring_back")
ENSEMBLE_SUFFIX = ".ensemble.onnx"
SPEED_BATCH = 8


class BringBackError(Exception):
    """Results that cannot be exported as they are; the message names the file and the fix."""


def read_results(folder: Path) -> dict:
    path = folder / "search.json"
    if not path.is_file():
        raise BringBackError(f"{path} does not exist: --results names the folder the search wrote ($OUT)")
    results = json.loads(path.read_text())
    if not results.get("winner"):
        raise BringBackError(f"{path} names no winner: no recipe finished its folds (see its 'recipes' statuses)")
    return results


def winning_record(results: dict) -> dict:
    return next(r for r in results["recipes"] if r["name"] == results["winner"])


def check_same_images(results: dict, prepared: Path, non_test: LabelledImages) -> None:
    """The search ran on the prepared file, and that file is this machine's non-test split, image for image."""
    data = read_arrays(prepared)
    if data.sha256 != results["data"]["sha256"]:
        raise BringBackError(
            f"{prepared} (sha256 {data.sha256[:12]}) is not the file the search trained on "
            f"({results['data']['sha256'][:12]}); bring back with the prepared file it used"
        )
    if data.x.shape[0] != len(non_test) or not np.array_equal(data.x, non_test.x.astype(np.uint8)):
        raise BringBackError(f"{prepared} holds other images than the split rebuilt here; run prepare again")


def load_model(weights: Path, filters: tuple[int, ...], name: str = "seed_cnn") -> keras.Model:
    """The float32 seed architecture (the served graph) with the search's weights."""
    if not weights.is_file():
        raise BringBackError(f"{weights} does not exist: copy every file the search wrote into --results")
    model = make_model(filters=filters, name=name)
    model.load_weights(str(weights))
    return model


def fold_ensemble(members: list[keras.Model]) -> keras.Model:
    """One graph, same signature as each member (float32 (N, 100, 100, 1) -> (N, 1)): the mean of their
    probabilities, so a server needs nothing new."""
    inputs = keras.Input(shape=members[0].input_shape[1:], name="input")
    outputs = layers.Average(name="fold_average")([member(inputs, training=False) for member in members])
    return keras.Model(inputs, outputs, name="seed_cnn_fold_ensemble")


def images_per_s(path: Path, x: np.ndarray, seconds: float) -> float | None:
    """onnxruntime on the CPU, batch 8, as training.variants times the precision variants."""
    if seconds <= 0:
        return None
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = np.ascontiguousarray(x[:SPEED_BATCH], dtype=np.float32)
    session.run(None, {name: batch})
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {name: batch})
        calls += 1
    return round(calls * len(batch) / (time.perf_counter() - start), 1)


def recipe_table(results: dict) -> str:
    """Every recipe's pooled out-of-fold figures side by side (markdown), the rule's winner in bold."""
    lines = [
        "| recipe | status | out-of-fold accuracy (threshold) | ROC AUC | log loss | flip-averaged accuracy / log loss "
        "| defective poly cells | seconds (5 folds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for record in results["recipes"]:
        name = f"**{record['name']}**" if record["name"] == results.get("winner") else record["name"]
        seconds = sum(f.get("seconds", 0.0) for f in record["folds"])
        pooled, flips = record.get("pooled"), record.get("pooled_flip_averaged")
        if pooled is None:
            lines.append(f"| {name} | {record['status']} | | | | | | {seconds:.0f} |")
            continue
        lines.append(
            f"| {name} | {record['status']} | {pooled['accuracy']:.3f} ({pooled['threshold']:.3f}) | "
            f"{_number(pooled['roc_auc'])} | {pooled['log_loss']:.3f} | "
            f"{flips['accuracy']:.3f} / {flips['log_loss']:.3f} | {_defective_poly(pooled)} | {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _defective_poly(pooled: dict) -> str:
    """Accuracy on polycrystalline cells the annotators called defective (2/3, 3/3): the card's weakest group."""
    groups = [v for k, v in pooled.get("by_stratum", {}).items() if k.endswith("poly") and k[:3] in ("2/3", "3/3")]
    images = sum(g["images"] for g in groups)
    if not images:
        return ""
    correct = sum(round(g["accuracy"] * g["images"]) for g in groups)
    return f"{correct / images:.3f} ({correct}/{images})"


def decide(pooled: dict, comparison: dict | None) -> dict:
    """The rule (training.accelerator.recipes.SELECTION_RULE) applied to the winner's figures."""
    mcnemar = comparison["mcnemar_exact"] if comparison else None
    better_by_mcnemar = bool(
        mcnemar
        and mcnemar["p_value"] < MCNEMAR_ALPHA
        and mcnemar["only_first_correct"] > mcnemar["only_second_correct"]
    )
    bar = passes_out_of_fold_bar(pooled)
    return {"ship": better_by_mcnemar or bar, "better_by_mcnemar": better_by_mcnemar,
            "passes_out_of_fold_bar": bar, "rule": SELECTION_RULE}  # fmt: skip


def export_candidates(
    results_dir: Path,
    results: dict,
    test: LabelledImages,
    out: Path,
    metadata: dict,
    previous: object | None,
    speed_seconds: float = 3.0,
) -> dict:
    """Exports the single and the ensemble candidate, scores both once on `test`, writes their cards and
    the decision; returns the decision record. `metadata` is the card's description of model and data
    (training.pipeline.base_metadata); `previous` the shipped model's answers (pipeline.previous_answers)."""
    from training import pipeline as step
    from training.export import sha256_of, write_metadata

    out.mkdir(parents=True, exist_ok=True)
    record = winning_record(results)
    threshold = record["pooled"]["threshold"]
    filters = tuple(results["run"]["filters"])
    folds = results["data"]["folds"]
    members = [load_model(results_dir / f"fold-{k}.weights.h5", filters, name=f"fold_{k}") for k in folds]
    final_weights = results_dir / "final.weights.h5"
    single = load_model(final_weights, filters) if final_weights.is_file() else None

    figures: dict = {}
    candidates = [("ensemble", fold_ensemble(members), out / f"model{ENSEMBLE_SUFFIX}")]
    if single is not None:
        candidates.insert(0, ("single", single, out / "model.onnx"))
    for kind, model, path in candidates:
        difference = step.export_verified(model, path, test)
        probability, metrics = step.onnx_held_out(path, test, threshold)
        figures[kind] = {
            "file": path.name, "sha256": sha256_of(path), "threshold": threshold, "test_metrics": metrics,
            "comparison_with_previous": step.compare_with_previous(previous, test, probability, threshold),
            "export": step.export_record(difference), "images_per_s": images_per_s(path, test.x, speed_seconds),
        }  # fmt: skip
        log.info(
            "%s: held-out accuracy %.4f (threshold %.3f), %s images/s",
            kind,
            metrics["accuracy"],
            threshold,
            figures[kind]["images_per_s"],
        )
    training = {
        "recipe": record["name"],
        "settings": record["settings"],
        "search": results["run"],
        "folds": folds,
        "threshold_selection": "maximises pooled out-of-fold accuracy (accelerator search)",
    }
    selection = {
        "method": "accelerator recipe search",
        "rule": SELECTION_RULE,
        "winner": record["name"],
        "pooled_out_of_fold": record["pooled"],
        "pooled_out_of_fold_flip_averaged": record["pooled_flip_averaged"],
    }
    ensemble = figures["ensemble"]
    members_record = {"members": [f"fold-{k}.weights.h5" for k in folds], "combine": "mean of probabilities",
                      "images_per_s": ensemble["images_per_s"]}  # fmt: skip
    ensemble_card = {**metadata, "threshold": threshold, "test_metrics": ensemble["test_metrics"],
                     "selection": selection, "comparison_with_previous": ensemble["comparison_with_previous"],
                     "export": ensemble["export"], "training": training, "ensemble": members_record}  # fmt: skip
    write_metadata(out / ensemble["file"], ensemble_card)
    decision = {"winner": record["name"], "threshold": threshold, "candidates": figures}
    if "single" in figures:
        single_figures = figures["single"]
        variant = {"file": ensemble["file"], "sha256": ensemble["sha256"], "threshold": threshold,
                   "test_accuracy": ensemble["test_metrics"]["accuracy"], "images_per_s": ensemble["images_per_s"],
                   "single_images_per_s": single_figures["images_per_s"]}  # fmt: skip
        write_metadata(out / "model.onnx", {
            **metadata, "threshold": threshold, "test_metrics": single_figures["test_metrics"], "selection": selection,
            "comparison_with_previous": single_figures["comparison_with_previous"], "export": single_figures["export"],
            "training": training, "ensemble_variant": variant,
        })  # fmt: skip
        decision.update(decide(record["pooled"], single_figures["comparison_with_previous"]))
    else:
        decision.update(ship=False, reason="the search wrote no final.weights.h5 (its final fit did not run)")
    (out / "recipes.md").write_text(recipe_table(results))
    (out / "decision.json").write_text(json.dumps(decision, indent=1) + "\n")
    return decision


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.accelerator.bring_back", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, required=True, help="the folder holding the search's files")
    p.add_argument(
        "--prepared",
        type=Path,
        default=Path("build/accelerator/elpv.npz"),
        help="the file the search trained on (checked against search.json and the split here)",
    )
    p.add_argument("--out", type=Path, default=Path("build/accelerator/model"))
    p.add_argument("--compare-with", type=Path, default=Path("models/model.onnx"), help="the shipped model")
    p.add_argument("--speed-seconds", type=float, default=3.0, help="images/s timing per file; 0 skips it")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    from training import pipeline as step
    from training.export import ExportError
    from training.settings import DataSettings, OutputSettings, RecipeSettings, SelectionSettings, TrainSettings

    try:
        results = read_results(args.results)
        meta = results["data"]
        data = DataSettings(test_split=meta["test_fraction"])
        loaded = step.load_data(data, meta["seed"], cv=True)
        check_same_images(results, args.prepared, loaded.parts.train)
        record = winning_record(results)
        recipe = record["settings"]
        settings = TrainSettings(
            data=data, selection=SelectionSettings(cv=len(meta["folds"])), output=OutputSettings(out=args.out),
            recipe=RecipeSettings(epochs=recipe["epochs"], batch_size=recipe["batch_size"], seed=meta["seed"],
                               learning_rate=recipe["learning_rate"], filters=tuple(results["run"]["filters"])),
            command=f"python -m training.accelerator.search (recipe {record['name']}) + bring_back",
        )  # fmt: skip
        metadata = step.base_metadata(
            settings,
            loaded,
            record["pooled"]["threshold"],
            "maximises pooled out-of-fold accuracy (accelerator search)",
        )
        previous = step.previous_answers(args.compare_with if args.compare_with.is_file() else None, loaded.parts.test)
        decision = export_candidates(
            args.results, results, loaded.parts.test, args.out, metadata, previous, args.speed_seconds
        )
    except (BringBackError, ArraysError, DataError, ExportError) as exc:
        print(f"bring_back: error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "recipes.md").read_text())
    print(f"decision: ship={decision['ship']} ({args.out / 'decision.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
