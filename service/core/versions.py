"""Where the served model comes from: one file (MODEL_PATH), or the highest version in MODEL_DIR.

MODEL_DIR follows the model-repository layout of TensorFlow Serving and Triton: one folder per version,
named by a whole number, each holding `model.onnx` and its card `model.json`. Higher numbers are newer.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from service.core.model import ModelLoadError

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
# ASCII digits only: `str.isdigit()` also accepts '²' or '٣', which int() then refuses. At most 18 digits,
# so every version fits an int64 as in Triton and TensorFlow Serving (and int() never meets Python's
# 4,300-digit limit).
VERSION_NAME = re.compile(r"[0-9]{1,18}")

# (file name, size, modification time in ns) of every file in a version folder: a copy still being written,
# or a refused version fixed in place, reads differently from what was refused.
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class ModelSource:
    path: Path
    version: str | None  # None: a lone MODEL_PATH file; its card's own `version` (or "1") names it
    fingerprint: Fingerprint = field(default=(), compare=False)


def fingerprint(folder: Path) -> Fingerprint:
    """What a version folder holds now, cheaply (one stat per file); () when it cannot be read."""
    try:
        entries = [(entry.name, entry.stat()) for entry in folder.iterdir() if entry.is_file()]
    except OSError:
        return ()
    return tuple(sorted((name, stat.st_size, stat.st_mtime_ns) for name, stat in entries))


class ModelRepository:
    """MODEL_DIR, read again at every reload; each folder it ignores is one warning line, once per name."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._warned: set[str] = set()

    def versions(self) -> list[tuple[int, Path]]:
        """(version, model file) for every folder of MODEL_DIR named by a whole number that holds model.onnx."""
        try:
            entries = list(self.model_dir.iterdir())
        except FileNotFoundError as exc:
            raise ModelLoadError(f"MODEL_DIR {self.model_dir} does not exist") from exc
        except OSError as exc:
            raise ModelLoadError(f"MODEL_DIR {self.model_dir} is not readable: {exc.strerror}") from exc
        found = []
        for entry in entries:
            if not VERSION_NAME.fullmatch(entry.name):
                self._ignore(entry)
                continue
            try:
                if (entry / MODEL_FILE).is_file():
                    found.append((int(entry.name), entry / MODEL_FILE))
            except OSError as exc:  # a folder without search permission: is_file raises EACCES
                raise ModelLoadError(f"version folder {entry} is not readable: {exc.strerror}") from exc
        return sorted(found)

    def _ignore(self, entry: Path) -> None:
        if entry.name in self._warned:
            return
        self._warned.add(entry.name)
        log.warning(
            "MODEL_DIR entry %r ignored: a version folder is named by a whole number in ASCII digits "
            "(at most 18), such as %s/2", entry.name, self.model_dir,
        )

    def latest(self) -> ModelSource:
        found = self.versions()
        if not found:
            raise ModelLoadError(
                f"MODEL_DIR {self.model_dir} holds no version: put a model at {self.model_dir}/1/{MODEL_FILE} "
                "(with its .json)"
            )
        return _source(*found[-1])

    def source(self, version: str) -> ModelSource:
        """One version's folder as it is now (a version already served, taken again: rollback by evidence),
        found by its number as `latest` found it, since its folder's name may have leading zeros."""
        for number, path in self.versions():
            if str(number) == version:
                return _source(number, path)
        raise ModelLoadError(f"version {version} is not in MODEL_DIR {self.model_dir} any more")


def _source(version: int, path: Path) -> ModelSource:
    """A version folder's model file; the folder's own name may have leading zeros ("007" serves as version 7)."""
    return ModelSource(path, str(version), fingerprint(path.parent))
