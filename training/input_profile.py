"""Writes the training inputs' gray-level profile into a model card, for the service's drift metrics.

    python -m training.input_profile --model models/model.onnx                  # ELPV, split from the card
    python -m training.input_profile --model my/model.onnx --data-dir classes/  # a folder data set

The profile is computed by `service.core.input_stats.profile_of` over the training split rebuilt from the split
settings the card recorded, after the same preprocessing the service applies, so served and training inputs
are binned by one function.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.core.input_stats import profile_of
from service.core.model_card import ModelCardError, card_path_for, read_model_card, update_model_card
from training.data import DataError, LabelledImages, recorded_split

CHUNK = 256


def training_split(card_path: Path, data_dir: Path | None) -> LabelledImages:
    try:
        return recorded_split(read_model_card(card_path), data_dir).train
    except DataError as exc:
        raise DataError(f"{card_path}: {exc}") from exc


def write_profile(model_path: Path, data_dir: Path | None = None) -> Path:
    card_path = card_path_for(model_path)
    train = training_split(card_path, data_dir)
    profile = profile_of(train.x[i : i + CHUNK] for i in range(0, len(train.x), CHUNK))
    update_model_card(card_path, input_statistics=profile)
    return card_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.input_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the .onnx file whose card gets the profile")
    parser.add_argument("--data-dir", type=Path, help="the folder data set it was trained on (default: ELPV)")
    args = parser.parse_args(argv)
    try:
        path = write_profile(args.model, args.data_dir)
    except (DataError, ModelCardError) as exc:
        print(f"input_profile: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote input_statistics into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
