"""The recipes the accelerator search compares, in the order it runs them, and the rule that chooses among
them: both fixed here, in code and in the model card, before any of their results exist."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# The card's bar for a cross-validated recipe (models/README.md, fixed before the first CV run): the shipped
# model's held-out 0.834 / 0.401, with a one-point margin for a threshold chosen on the same predictions.
SHIP_OOF_ACCURACY = 0.845
SHIP_OOF_LOG_LOSS = 0.401
MCNEMAR_ALPHA = 0.05

SELECTION_RULE = (
    "Recipes run in the listed order; a recipe counts only when every fold ran its whole schedule. Each fold's "
    "model is the schedule's last epoch (EMA weights, BatchNorm statistics measured on the fold's training "
    "images): no epoch or checkpoint picking. Its out-of-fold probabilities are pooled over all non-test images, "
    "each predicted once, and the threshold is the one with the highest pooled out-of-fold accuracy (ties: "
    "nearest 0.5). The recipe with the highest pooled out-of-fold accuracy wins; ties go to the lower pooled "
    "log loss. The winner is fitted once more on all non-test images (the single-model candidate) and its fold "
    "models, averaged, are the ensemble candidate; both take the winner's pooled out-of-fold threshold. The "
    "test split never goes to the accelerator; it is scored once, after the choice. The winner replaces the "
    f"shipped model when McNemar's exact test on the held-out images, each model at its own threshold, gives "
    f"p < {MCNEMAR_ALPHA} in the winner's favour, or when its pooled out-of-fold accuracy is at least "
    f"{SHIP_OOF_ACCURACY} and its pooled out-of-fold log loss below {SHIP_OOF_LOG_LOSS}. The ensemble ships "
    "beside it as its own file whenever the winner ships, with its own held-out figures and speed."
)


@dataclass(frozen=True)
class Recipe:
    """One way of fitting the seed architecture. Every recipe: Adam, batch 32, hard 0/1 labels, a fixed
    schedule (linear warm-up, then cosine to 1e-6), an EMA of the weights, no early stopping."""

    name: str
    description: str
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_epochs: int = 2
    ema_momentum: float | None = 0.995
    quarter_turns: bool = False
    # Small affine move: rotation +-degrees, shift +-shift of the side, zoom x[1-zoom, 1+zoom].
    degrees: float = 0.0
    shift: float = 0.0
    zoom: float = 0.0
    # Brightness/contrast strength, as training.fit's jitter; 0 = off.
    jitter: float = 0.0
    label_smoothing: float = 0.0
    # Beta(alpha, alpha) mixup weight per image; 0 = off.
    mixup_alpha: float = 0.0

    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("name", "description")}


_STRONG = {"quarter_turns": True, "degrees": 5.0, "shift": 0.05, "zoom": 0.05, "jitter": 0.1}

# Order = priority: the budget may end the search before the last ones run. 60 epochs: the card's 40-epoch
# fold was still improving at its end (out-of-fold log loss 0.422 at epoch 35, 0.420 at 40).
RECIPES: tuple[Recipe, ...] = (
    Recipe("strong-aug", "all 8 symmetries, rotation +-5 deg, shift and zoom +-5 %, brightness/contrast 0.1",
           **_STRONG),
    Recipe("strong-aug-smooth-mixup", "strong-aug + label smoothing 0.1 + mixup (alpha 0.2), for the noisy "
           "1/3 and 2/3 vote shares", **_STRONG, label_smoothing=0.1, mixup_alpha=0.2),
    Recipe("strong-aug-smooth", "strong-aug + label smoothing 0.1", **_STRONG, label_smoothing=0.1),
    Recipe("flips", "the card's cross-validated recipe (flips only, busbars stay horizontal), full length"),
)  # fmt: skip

BY_NAME = {recipe.name: recipe for recipe in RECIPES}


def chosen_recipes(names: str | None, epochs: int | None = None) -> list[Recipe]:
    """The recipes named (comma separated, in the listed order) or all; `epochs` overrides their length."""
    wanted = list(RECIPES) if not names else []
    for name in (names or "").split(","):
        if not name:
            continue
        if name not in BY_NAME:
            raise ValueError(f"unknown recipe {name!r}; the recipes are {', '.join(BY_NAME)}")
        wanted.append(BY_NAME[name])
    if epochs is not None:
        wanted = [replace(r, epochs=epochs, warmup_epochs=min(r.warmup_epochs, epochs - 1)) for r in wanted]
    return wanted


def winner(results: list[dict]) -> dict | None:
    """The rule's choice among the recipes' result records (each with "complete" and "pooled")."""
    complete = [r for r in results if r.get("complete")]
    if not complete:
        return None
    return max(complete, key=lambda r: (r["pooled"]["accuracy"], -r["pooled"]["log_loss"]))


def passes_out_of_fold_bar(pooled: dict) -> bool:
    return pooled["accuracy"] >= SHIP_OOF_ACCURACY and pooled["log_loss"] < SHIP_OOF_LOG_LOSS
