"""The recipe search, run on the accelerator (Keras on JAX; any Keras backend runs it):

    KERAS_BACKEND=jax python -m training.accelerator.search --data build/accelerator/elpv.npz --out $OUT \\
        --budget-s 480

For each recipe of training.accelerator.recipes, in order, while the budget lasts: one fresh model per fold
(the folds are in the prepared file), fitted for the recipe's whole schedule, then its out-of-fold
probabilities (plain and flip-averaged). When a recipe's folds are all done its pooled figures are
computed, and if it leads, its fold weights are copied to --out. The leader is then fitted once on all
images (--out/final.weights.h5). Everything is written as it happens, so a run cut short leaves what it
finished:

    OUT/search.json             every recipe's settings, per-fold times and losses, pooled out-of-fold
                                figures and probabilities (in the prepared file's order), the winner
    OUT/search.log              the log
    OUT/fold-K.weights.h5       the leading recipe's fold models (training.model.make_model's weights)
    OUT/final.weights.h5        the winner fitted on all images

It imports neither TensorFlow nor the service (the accelerator has neither); the test split is not in the
prepared file. The choice follows training.accelerator.recipes.SELECTION_RULE.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from training.accelerator.arrays import ArraysError, Prepared, read_arrays
from training.accelerator.recipes import SELECTION_RULE, Recipe, chosen_recipes, winner
from training.augmentation import make_augmentation, mixup
from training.batchnorm import recalibrate_batchnorm
from training.evaluate import best_threshold, log_loss
from training.flips import flip_averaged_predict
from training.model import SEED_FILTERS, make_model
from training.schedules import cosine_schedule
from training.settings import filters_argument

log = logging.getLogger("training.accelerator.search")
RESULTS = "search.json"
PREDICT_BATCH = 256
# Images whose inference-mode statistics set BatchNorm after each fit (the whole fold's training part is
# 1,574 images; the card measured 256 to give the same out-of-fold figures as all of them).
CALIBRATION_IMAGES = 512


class Batches(keras.utils.PyDataset):
    """Shuffled batches of one fold's images, reshuffled each epoch, the last partial batch dropped (a batch
    of a few images skews BatchNorm, and under JAX each new shape is another compilation); with mixup, each
    batch mixed with itself. Pixels go to the model as float32 0-255: the model rescales."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, mixup_alpha: float, seed: int) -> None:
        super().__init__()
        if len(x) < batch_size:
            raise ValueError(f"{len(x)} images are fewer than one batch of {batch_size}")
        self.x, self.y, self.batch_size, self.mixup_alpha = x, y.astype(np.float32)[:, None], batch_size, mixup_alpha
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x, y = self.x[chosen].astype(np.float32), self.y[chosen]
        if self.mixup_alpha > 0:
            x, y = mixup(x, y, self.mixup_alpha, self.rng)
        return x, y

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))


class Deadline(keras.callbacks.Callback):
    """Stops the fit at the first batch past `deadline` (time.monotonic()); `cut` says it did."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline
        self.cut = False

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if time.monotonic() > self.deadline:
            self.cut = True
            self.model.stop_training = True


class EpochLosses(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.losses.append(round(float((logs or {}).get("loss", float("nan"))), 4))


@dataclass(frozen=True)
class Fitted:
    model: keras.Model
    seconds: float
    losses: list[float]
    cut: bool


def fit_recipe(
    x: np.ndarray,
    y: np.ndarray,
    recipe: Recipe,
    *,
    seed: int,
    filters: tuple[int, ...],
    mixed_precision: bool,
    deadline: float,
) -> Fitted:
    """One fresh model fitted with `recipe` on (x, y), ending with its EMA weights and BatchNorm statistics
    measured on (up to CALIBRATION_IMAGES of) x in inference mode."""
    start = time.monotonic()
    keras.backend.clear_session()  # also resets the dtype policy
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed_precision else "float32")
    keras.utils.set_random_seed(seed)
    model = make_model(filters=filters)
    augmentation = make_augmentation(quarter_turns=recipe.quarter_turns, degrees=recipe.degrees, shift=recipe.shift,
                                     zoom=recipe.zoom, jitter=recipe.jitter, seed=seed)  # fmt: skip
    trainer = keras.Sequential([keras.Input(shape=model.input_shape[1:]), augmentation, model], name="trainer")
    ema = {} if recipe.ema_momentum is None else {"use_ema": True, "ema_momentum": recipe.ema_momentum}
    trainer.compile(
        optimizer=keras.optimizers.Adam(learning_rate=recipe.learning_rate, **ema),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=recipe.label_smoothing),
    )
    stop, losses = Deadline(deadline), EpochLosses()
    trainer.fit(
        Batches(x, y, recipe.batch_size, recipe.mixup_alpha, seed), epochs=recipe.epochs, verbose=0,
        callbacks=[cosine_schedule(recipe.learning_rate, recipe.epochs, warmup_epochs=recipe.warmup_epochs),
                   losses, stop],
    )  # fmt: skip
    # fit() has put the EMA into the weights; BatchNorm's running statistics followed the raw ones.
    spread = np.linspace(0, len(x) - 1, min(CALIBRATION_IMAGES, len(x))).astype(int)
    recalibrate_batchnorm(model, x[spread].astype(np.float32))
    return Fitted(model, time.monotonic() - start, losses.losses, stop.cut)


def predict(model: keras.Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain and flip-averaged probabilities (N,)."""
    x = x.astype(np.float32)
    plain = model.predict(x, batch_size=PREDICT_BATCH, verbose=0)[:, 0]
    flips = flip_averaged_predict(model, x, batch_size=PREDICT_BATCH)[:, 0]
    return plain.astype(np.float32), flips.astype(np.float32)


def pooled_figures(y: np.ndarray, probability: np.ndarray, strata: np.ndarray | None = None) -> dict:
    threshold = best_threshold(y, probability)
    correct = (probability >= threshold) == y
    figures = {
        "threshold": threshold,
        "accuracy": float(correct.mean()),
        "correct": int(correct.sum()),
        "images": len(y),
        "log_loss": log_loss(y, probability),
        "roc_auc": _roc_auc(y, probability),
        "accuracy_at_0.5": float(((probability >= 0.5) == y).mean()),
    }
    if strata is not None:
        figures["by_stratum"] = {
            str(s): {"images": int((strata == s).sum()), "accuracy": float(correct[strata == s].mean())}
            for s in np.unique(strata)
        }
    return figures


def _roc_auc(y: np.ndarray, probability: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, probability)) if len(np.unique(y)) == 2 else None


class Budget:
    """Seconds left, and whether a piece of work of a given size is expected to fit, from the mean seconds per
    image-epoch of the finished fits. Each recipe's first fold also compiles its graph (the later ones find it
    in XLA's cache), so the mean carries one compilation per recipe, as the work to come does."""

    def __init__(self, seconds: float, clock: object = time.monotonic) -> None:
        self.clock = clock
        self.deadline = clock() + seconds
        self.rates: list[float] = []

    def record(self, seconds: float, images: int, epochs: int) -> None:
        self.rates.append(seconds / max(images * epochs, 1))

    def estimate(self, images: int, epochs: int) -> float:
        """0 before any fit has finished: the first one always starts (and the deadline stops it if need be)."""
        return float(np.mean(self.rates)) * images * epochs if self.rates else 0.0

    def left(self) -> float:
        return self.deadline - self.clock()

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()


class Search:
    """Runs the recipes fold by fold into `work`, keeps --out current with the leader's files."""

    def __init__(self, data: Prepared, out: Path, work: Path, args: argparse.Namespace, budget: Budget) -> None:
        self.data, self.out, self.work, self.args, self.budget = data, out, work, args, budget
        self.records: list[dict] = []
        self.leader: str | None = None
        self.final: dict | None = None
        self.started = time.monotonic()

    # --- the results file, rewritten after every fold ---
    def write(self) -> None:
        content = {
            "selection_rule": SELECTION_RULE,
            "data": {"file": str(self.args.data), "sha256": self.data.sha256, "images": len(self.data),
                     "folds": self.data.folds, "class_names": list(self.data.class_names), **self.data.meta},
            "run": {"backend": keras.backend.backend(), "device": _device(),
                    "mixed_precision": self.args.mixed_precision, "filters": list(self.args.filters),
                    "seed": self.args.seed, "budget_s": self.args.budget_s,
                    "elapsed_s": round(time.monotonic() - self.started, 1), "versions": _versions()},
            "recipes": self.records,
            "winner": self.leader,
            "final": self.final,
        }  # fmt: skip
        temporary = self.out / (RESULTS + ".tmp")
        temporary.write_text(json.dumps(content, indent=1) + "\n")
        temporary.replace(self.out / RESULTS)

    def run(self, recipes: list[Recipe]) -> int:
        for recipe in recipes:
            record = {"name": recipe.name, "description": recipe.description, "settings": recipe.settings(),
                      "complete": False, "status": "not run", "folds": []}  # fmt: skip
            self.records.append(record)
        self.write()
        for recipe, record in zip(recipes, self.records, strict=True):
            if not self.run_recipe(recipe, record):
                break
        best = winner(self.records)
        self.leader = best["name"] if best else None
        self.write()
        if best is None:
            log.error("no recipe finished all its folds within --budget-s %s: nothing to choose", self.args.budget_s)
            return 3
        if self.args.final:
            self.run_final(next(r for r in recipes if r.name == best["name"]))
        self.write()
        log.info(
            "winner %s: pooled out-of-fold accuracy %.4f, log loss %.4f; %s",
            best["name"],
            best["pooled"]["accuracy"],
            best["pooled"]["log_loss"],
            self.out / RESULTS,
        )
        return 0

    def run_recipe(self, recipe: Recipe, record: dict) -> bool:
        """All folds of one recipe; False when the budget ended it (the search stops there)."""
        data, folds = self.data, self.data.folds
        train_images = len(data) - min(int((data.fold == k).sum()) for k in folds)
        needed = len(folds) * self.budget.estimate(train_images, recipe.epochs) + self.final_reserve(recipe)
        if not self.budget.fits(needed):
            record["status"] = f"not run: needs about {needed:.0f} s, {self.budget.left():.0f} s left"
            log.info("%s: %s", recipe.name, record["status"])
            return False
        plain = np.full(len(data), np.nan, np.float32)
        flips = np.full(len(data), np.nan, np.float32)
        record["status"] = "running"
        for number in folds:
            held_back = data.fold == number
            log.info(
                "%s, fold %d of %d: %d training, %d out-of-fold images",
                recipe.name,
                number,
                len(folds),
                int((~held_back).sum()),
                int(held_back.sum()),
            )
            fitted = fit_recipe(data.x[~held_back], data.y[~held_back], recipe, seed=self.args.seed + number,
                                filters=self.args.filters, mixed_precision=self.args.mixed_precision,
                                deadline=self.budget.deadline)  # fmt: skip
            if fitted.cut:
                record["status"] = f"cut short by the budget in fold {number}"
                record["folds"].append({"fold": number, "seconds": round(fitted.seconds, 1), "cut": True})
                self.write()
                log.info("%s: %s", recipe.name, record["status"])
                return False
            plain[held_back], flips[held_back] = predict(fitted.model, data.x[held_back])
            weights = self.work / recipe.name / f"fold-{number}.weights.h5"
            weights.parent.mkdir(parents=True, exist_ok=True)
            fitted.model.save_weights(str(weights))
            self.budget.record(fitted.seconds, int((~held_back).sum()), recipe.epochs)
            record["folds"].append({
                "fold": number, "seconds": round(fitted.seconds, 1), "epochs": len(fitted.losses),
                "training_loss_by_epoch": fitted.losses,
                "out_of_fold": pooled_figures(data.y[held_back], plain[held_back]),
            })  # fmt: skip
            record["out_of_fold_probability"] = _rounded(plain)
            record["out_of_fold_probability_flip_averaged"] = _rounded(flips)
            self.write()
            log.info(
                "%s, fold %d: %.0f s, out-of-fold accuracy %.4f",
                recipe.name,
                number,
                fitted.seconds,
                record["folds"][-1]["out_of_fold"]["accuracy"],
            )
        record.update(complete=True, status="complete", pooled=pooled_figures(data.y, plain, data.strata),
                      pooled_flip_averaged=pooled_figures(data.y, flips, data.strata))  # fmt: skip
        best = winner(self.records)
        if best is record:
            self.leader = recipe.name
            for number in folds:
                shutil.copyfile(
                    self.work / recipe.name / f"fold-{number}.weights.h5", self.out / f"fold-{number}.weights.h5"
                )
        self.write()
        log.info("%s: pooled out-of-fold accuracy %.4f (threshold %.3f), log loss %.4f, AUC %s; flip-averaged %.4f",
                 recipe.name, record["pooled"]["accuracy"], record["pooled"]["threshold"], record["pooled"]["log_loss"],
                 record["pooled"]["roc_auc"], record["pooled_flip_averaged"]["accuracy"])  # fmt: skip
        return True

    def final_reserve(self, recipe: Recipe) -> float:
        return self.budget.estimate(len(self.data), recipe.epochs) if self.args.final else 0.0

    def run_final(self, recipe: Recipe) -> None:
        """The winner fitted on every image; skipped (and said so) when the budget cannot hold it."""
        needed = self.final_reserve(recipe)
        if not self.budget.fits(needed):
            self.final = {
                "recipe": recipe.name,
                "status": f"not run: needs about {needed:.0f} s, {self.budget.left():.0f} s left",
            }
            return
        log.info("final fit: %s on all %d images", recipe.name, len(self.data))
        fitted = fit_recipe(
            self.data.x,
            self.data.y,
            recipe,
            seed=self.args.seed,
            filters=self.args.filters,
            mixed_precision=self.args.mixed_precision,
            deadline=self.budget.deadline,
        )
        if fitted.cut:
            self.final = {
                "recipe": recipe.name,
                "status": "cut short by the budget",
                "seconds": round(fitted.seconds, 1),
            }
            return
        fitted.model.save_weights(str(self.out / "final.weights.h5"))
        self.final = {"recipe": recipe.name, "status": "complete", "seconds": round(fitted.seconds, 1),
                      "epochs": len(fitted.losses), "training_loss_by_epoch": fitted.losses,
                      "weights": "final.weights.h5"}  # fmt: skip


def _rounded(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 6) for v in values]


def _device() -> str:
    if keras.backend.backend() == "jax":
        import jax

        return ", ".join(str(d.device_kind) for d in jax.devices())
    return platform.processor() or platform.machine()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("keras", "jax", "jaxlib", "numpy", "scikit-learn", "h5py"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.accelerator.search", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the .npz training.accelerator.prepare wrote")
    p.add_argument("--out", type=Path, required=True, help="results: search.json, search.log, the leader's weights")
    p.add_argument("--work", type=Path, help="every recipe's fold weights (default: a new temporary folder)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="wall-clock seconds for the whole search; no fit is started that is not expected to end "
        "inside it, and one running past it is stopped (and not counted)",
    )
    p.add_argument("--recipes", help="comma-separated recipe names, in the listed order (default: all)")
    p.add_argument("--epochs", type=int, help="override every recipe's epochs (a smoke test; not the search)")
    p.add_argument("--filters", type=filters_argument, default=SEED_FILTERS, help="filters per block (the seed's)")
    p.add_argument(
        "--mixed-precision",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit in mixed bfloat16 (the weights stay float32, as the export wants)",
    )
    p.add_argument(
        "--final",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit the winner once more on every image (final.weights.h5)",
    )
    p.add_argument("--seed", type=int, default=42, help="fold k's model is seeded with seed + k")
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be positive")
    return args


def _jax_compilation_cache(work: Path) -> None:
    """Every fold builds the same graph: XLA's persistent cache compiles it once per recipe, not per fold."""
    if keras.backend.backend() != "jax":
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(work / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    try:
        recipes = chosen_recipes(args.recipes, args.epochs)
        data = read_arrays(args.data)
    except (ValueError, ArraysError) as exc:
        print(f"search: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="recipe-search-"))
    work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    # Its own file handler: the log comes back with the results, whoever configured logging first.
    to_file = logging.FileHandler(args.out / "search.log")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(to_file)
    log.setLevel(logging.INFO)
    try:
        _jax_compilation_cache(work)
        log.info("backend %s on %s; %d images, folds %s; recipes %s; budget %.0f s", keras.backend.backend(),
                 _device(), len(data), data.folds, [r.name for r in recipes], args.budget_s)  # fmt: skip
        return Search(data, args.out, work, args, budget).run(recipes)
    finally:
        log.removeHandler(to_file)
        to_file.close()


if __name__ == "__main__":
    sys.exit(main())
