"""What `prepare` carries to the accelerator: every package Keras needs is there or in the wheels, and the
folder stays well inside what the device tool carries."""

from __future__ import annotations

import re
from importlib.metadata import requires
from pathlib import Path

import pytest

from training.accelerator import prepare


def test_every_requirement_of_keras_is_on_the_accelerator_or_among_the_wheels() -> None:
    needed = {"keras"}
    for name in ("keras", "optree"):
        for requirement in requires(name) or []:
            if "extra ==" in requirement:
                continue
            needed.add(re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("_", "-"))

    missing = needed - set(prepare.MISSING_THERE) - prepare.THERE_ALREADY

    assert not missing, f"add to MISSING_THERE in training/accelerator/prepare.py (the wheels to carry): {missing}"


def test_prepare_refuses_a_folder_too_large_to_carry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def oversize(path: Path, folds: int, seed: int, test_fraction: float) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.truncate(prepare.SIZE_LIMIT_BYTES + 1)
        return "0" * 64

    monkeypatch.setattr(prepare, "write_elpv", oversize)

    assert prepare.main(["--dir", str(tmp_path), "--no-wheels"]) == 1
    assert "delete stale files there and run it again" in capsys.readouterr().err
