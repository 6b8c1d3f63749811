"""`make samples`: a few held-out ELPV cells copied into a git-ignored folder for the README's examples."""

from __future__ import annotations

import importlib.util
import random
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from training import samples

REPO = Path(__file__).resolve().parents[2]


def test_the_samples_are_unanimous_held_out_cells_of_the_shipped_model() -> None:
    pytest.importorskip("elpv_dataset", reason="the data set is in the train extra")
    from service.core.model_card import read_model_card
    from training.data import ELPV_CLASS_NAMES, elpv_table, load_elpv, split

    recorded = read_model_card(REPO / "models/model.json").dataset.split
    # Labels alone rebuild the split (no decoding): the recorded fractions and seed.
    test = split(load_elpv(decode=False), recorded.test_fraction, recorded.validation_fraction, recorded.seed).test
    test_files = {f"images/{Path(source).name}" for source in test.sources}
    table = elpv_table()
    vote = dict(zip(map(str, table["path"]), map(float, table["probability"]), strict=True))
    kind = dict(zip(map(str, table["path"]), map(str, table["type"]), strict=True))
    for label, source in samples.CELLS:
        assert source in test_files, f"{source} was trained on"
        assert vote[source] == (1.0 if label == ELPV_CLASS_NAMES[1] else 0.0)
    # Drawn, not chosen: the same seeded draw from the same held-out groups gives the same cells.
    rng = random.Random(samples.SEED)
    drawn = []
    for label in (ELPV_CLASS_NAMES[1], ELPV_CLASS_NAMES[0]):
        for cell_type in ("mono", "poly"):
            group = sorted(s for s in test_files if vote[s] == (label == ELPV_CLASS_NAMES[1]) and kind[s] == cell_type)
            drawn += [(label, source) for source in sorted(rng.sample(group, 2))]
    assert tuple(drawn) == samples.CELLS


def test_copies_four_cells_of_each_class_under_readme_names(tmp_path: Path) -> None:
    pytest.importorskip("elpv_dataset", reason="the data set is in the train extra")
    written = samples.copy_samples(tmp_path / "samples")
    assert [path.name for path in written] == [
        *(f"defective-{i}.png" for i in range(1, 5)), *(f"functional-{i}.png" for i in range(1, 5))
    ]
    for path in written:
        with Image.open(path) as cell:
            assert (cell.format, cell.size) == ("PNG", (300, 300))


def test_without_the_data_set_package_it_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert samples.main(["--out", str(tmp_path)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "samples: error: the ELPV data set package is not installed: make samples (or: pip install elpv-dataset)"
    )


def test_the_samples_folder_is_never_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "samples/defective-1.png"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert ignored.returncode == 0, "samples/ must be in .gitignore: no ELPV image is committed"
