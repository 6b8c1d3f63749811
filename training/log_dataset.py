"""`dataset --from-log URL|DATA_DIR --out DIR --model MODEL`: the operators' verdicts as a data set to train on.

Every judged answer whose image the log kept (PREDICTION_LOG_IMAGES=true) is written into a folder named by its
verdict, `DIR/<label>/<sha256>.<ext>`, once per distinct image (sha256 of the bytes as sent; the newest verdict
wins when one image was judged twice differently), with `DIR/manifest.json`: per image its ids, the versions
that answered, the verdicts and their times. Images whose sha256 is in a model's held-out test set are left out
and counted, so the test figures of the next model stay honest (`train --extra-data` checks again).

Running it again writes the same folder: files already there are kept, files of images no longer in the set (a
verdict changed the label) are removed, and the manifest is rewritten only when it differs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from sqlalchemy import select

from service.core.model_card import ModelCardError, card_path_for, read_model_card
from service.core.quality.store import Store, feedback, predictions, sqlite_url

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Pillow's format names -> the suffix training.data reads.
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}
ROWS_PER_FETCH = 200  # images are ~34 KiB: a fetch holds a few MB


class DatasetError(Exception):
    """A log or model that cannot be used; the message names the fix."""


@dataclass(frozen=True)
class Judged:
    id: str
    version: str
    answered: float
    verdict: str
    verdict_time: float
    sha256: str
    kept: bool  # the log holds the image's bytes


@dataclass
class Entry:
    """One distinct image and every judged answer of it."""

    sha256: str
    label: str = ""
    latest: float = -1.0
    suffix: str = ""
    answers: list[dict[str, object]] = field(default_factory=list)

    @property
    def file(self) -> str:
        return f"{self.label}/{self.sha256}{self.suffix}"


def store_for(source: str) -> Store:
    """A database URL, or a DATA_DIR holding the SQLite log."""
    if "://" in source:
        return Store(source)
    folder = Path(source)
    if not (folder / "predictions.sqlite3").is_file():
        raise DatasetError(f"{folder / 'predictions.sqlite3'} does not exist: pass the service's DATA_DIR, or "
                           "the PREDICTION_LOG_URL of its database")
    return Store(sqlite_url(folder))


def judged_answers(store: Store) -> Iterator[Judged]:
    """Every served answer with a verdict, oldest verdict first (the bytes are fetched later, once per image)."""
    query = (
        select(predictions.c.id, predictions.c.version, predictions.c.time, feedback.c.label, feedback.c.time,
               predictions.c.image_sha256, predictions.c.image.is_not(None))
        .join(feedback, feedback.c.id == predictions.c.id)
        .where(predictions.c.role == "served")
        .order_by(feedback.c.time, predictions.c.id)
    )
    with store.engine.connect() as connection:
        for row in connection.execution_options(yield_per=ROWS_PER_FETCH).execute(query):
            yield Judged(*row[:6], bool(row[6]))


def image_of(store: Store, id: str) -> bytes | None:
    query = select(predictions.c.image).where(predictions.c.id == id, predictions.c.role == "served")
    with store.engine.connect() as connection:
        return connection.scalar(query)


def held_out_hashes(models: Sequence[Path], data_dir: Path | None) -> set[str]:
    """sha256 of every file of the held-out test split of each model (its card rebuilds the split)."""
    # training.data loads scikit-learn (2.4 s): after the arguments are checked.
    from training.data import DataError, file_sha256, held_out_sources

    hashes: set[str] = set()
    for model in models:
        try:
            card = read_model_card(card_path_for(model) if model.suffix == ".onnx" else model)
            hashes |= {file_sha256(path) for path in held_out_sources(card, data_dir)}
        except (ModelCardError, DataError, OSError) as exc:
            raise DatasetError(f"--model {model}: {exc}") from exc
    return hashes


def suffix_of(data: bytes) -> str | None:
    """The image's file suffix, or None for bytes that are no image file (a /v2 tensor's raw floats)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return SUFFIXES.get(image.format or "")
    except (UnidentifiedImageError, OSError):
        return None


def collect(answers: Iterator[Judged], held_out: set[str]) -> tuple[dict[str, Entry], dict[str, int]]:
    """Judged answers grouped by image, the newest verdict its label; what was left out, counted."""
    entries: dict[str, Entry] = {}
    counts = {"judged_answers": 0, "held_out": 0, "no_image": 0, "not_an_image": 0}
    for answer in answers:
        counts["judged_answers"] += 1
        if not answer.kept:
            counts["no_image"] += 1
        elif answer.sha256 in held_out:
            counts["held_out"] += 1
        else:
            entry = entries.setdefault(answer.sha256, Entry(answer.sha256))
            if answer.verdict_time >= entry.latest:
                entry.label, entry.latest = answer.verdict, answer.verdict_time
            entry.answers.append({"id": answer.id, "version": answer.version, "answered": answer.answered,
                                  "verdict": answer.verdict, "verdict_time": answer.verdict_time})
    return entries, counts


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)  # atomic: a reader (train) never sees half a file
    return True


def _is_ours(path: Path) -> bool:
    """A file this command wrote: <sha256>.<ext>."""
    return path.is_file() and len(path.stem) == 64 and all(c in "0123456789abcdef" for c in path.stem)


def write_dataset(store: Store, out: Path, held_out: set[str], models: Sequence[Path]) -> dict[str, object]:
    """Writes (or brings up to date) the folder; returns the manifest."""
    entries, counts = collect(judged_answers(store), held_out)
    written = 0
    for entry in list(entries.values()):
        data = image_of(store, str(entry.answers[-1]["id"]))
        suffix = suffix_of(data) if data is not None else None
        if data is None or suffix is None or hashlib.sha256(data).hexdigest() != entry.sha256:
            counts["not_an_image"] += len(entry.answers)  # a /v2 tensor's floats, or bytes gone meanwhile
            del entries[entry.sha256]
            continue
        entry.suffix = suffix
        written += _write_if_changed(out / entry.file, data)
    wanted = {out / entry.file for entry in entries.values()}
    removed = 0
    for folder in (p for p in out.iterdir() if p.is_dir()) if out.is_dir() else ():
        for path in folder.iterdir():
            if _is_ours(path) and path not in wanted:
                path.unlink()  # its verdict moved it to the other class, or it is held out now
                removed += 1
    counts["duplicates"] = sum(len(e.answers) - 1 for e in entries.values())
    counts["conflicting_verdicts"] = sum(len({a["verdict"] for a in e.answers}) > 1 for e in entries.values())
    manifest = {
        "source": store.where,
        "held_out_models": [str(model) for model in models],
        "images": len(entries),
        "classes": {label: sum(e.label == label for e in entries.values())
                    for label in sorted({e.label for e in entries.values()})},
        "counted": counts,
        "entries": [{"sha256": e.sha256, "label": e.label, "file": e.file, "answers": e.answers}
                    for e in sorted(entries.values(), key=lambda e: e.sha256)],
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_if_changed(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    log.info("%d images %s; %d files written, %d removed; counted: %s", len(entries), manifest["classes"],
             written, removed, counts)
    return manifest


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("--from-log", required=True, metavar="URL|DATA_DIR",
                   help="the prediction log: the service's DATA_DIR (SQLite) or its PREDICTION_LOG_URL")
    p.add_argument("--out", required=True, type=Path, help="the folder to write: OUT/<label>/<sha256>.<ext>")
    p.add_argument("--model", required=True, type=Path, action="append",
                   help="a model (model.onnx or its .json card) whose held-out test images are left out; repeat "
                        "it for every version you will compare on its test set")
    p.add_argument("--data-dir", type=Path,
                   help="the folder data set the models were trained on (ELPV needs none)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        store = store_for(args.from_log)
        held_out = held_out_hashes(args.model, args.data_dir)
        manifest = write_dataset(store, args.out, held_out, args.model)
    except DatasetError as exc:
        print(f"dataset: {exc}", file=sys.stderr)
        return 2
    print(f"{manifest['images']} images in {args.out} {manifest['classes']}; counted {manifest['counted']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
