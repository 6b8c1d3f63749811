"""`predict PATH... --out results.csv`: files, folders and globs through the same pipeline, bad files as rows."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from service.entrypoints.predict_cli import COLUMNS, main
from tests.service.helpers import expected_probability, gray_png


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_PATH", "MODEL_DIR", "THRESHOLD", "MAX_FILE_BYTES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "line-a").mkdir(parents=True)
    (root / "line-a" / "bright.png").write_bytes(gray_png(220))
    (root / "line-a" / "dark.png").write_bytes(gray_png(20))
    (root / "notes.txt").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_a_folder_with_good_and_bad_files_gives_a_row_each(folder: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    code = main([str(folder), str(tmp_path / "missing.png"), "--out", str(out), "--model", str(tiny_model_path)])
    assert code == 0
    rows = {Path(row["path"]).name: row for row in _rows(out)}
    assert set(rows) == {"bright.png", "dark.png", "notes.txt", "empty.png", "missing.png"}
    for name, level, label in (("bright.png", 220, "defective"), ("dark.png", 20, "functional")):
        row = rows[name]
        assert float(row["probability"]) == pytest.approx(expected_probability(gray_png(level)), abs=1e-6)
        assert (row["label"], row["model_version"], row["error"]) == (label, "1", "")
    assert rows["notes.txt"]["error"] == "file 'notes.txt': the bytes are not a decodable image"
    assert rows["empty.png"]["error"] == "file 'empty.png': the file is empty"
    assert rows["missing.png"]["error"] == "no such file or folder"
    assert rows["missing.png"]["probability"] == ""


def test_globs_are_expanded_and_a_threshold_applies(folder: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    pattern = str(folder / "**" / "*.png")
    assert main([pattern, "--out", str(out), "--model", str(tiny_model_path), "--threshold", "0.99"]) == 0
    rows = {Path(row["path"]).name: row for row in _rows(out)}
    assert set(rows) == {"bright.png", "dark.png", "empty.png"}
    assert rows["bright.png"]["label"] == "functional"  # about 0.96, under 0.99


def test_nothing_readable_exits_1(tmp_path: Path, tiny_model_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"garbage")
    out = tmp_path / "results.csv"
    assert main([str(tmp_path / "bad.png"), "--out", str(out), "--model", str(tiny_model_path)]) == 1
    assert [row["error"] for row in _rows(out)] == ["file 'bad.png': the bytes are not a decodable image"]


@pytest.mark.parametrize("value", ["1.5", "-1"])
def test_a_threshold_outside_0_to_1_is_a_usage_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path), "--out", str(tmp_path / "r.csv"), "--threshold", value])
    assert exited.value.code == 2


def test_the_module_runs_as_a_command(folder: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    completed = subprocess.run(
        [sys.executable, "-m", "service.entrypoints.predict_cli", str(folder / "line-a"), "--out", str(out)],
        env={"PATH": "/usr/bin:/bin", "MODEL_PATH": str(tiny_model_path)},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "2 of 2 files classified" in completed.stderr
    assert len(_rows(out)) == 2


def test_it_finds_the_shipped_model_from_any_folder(folder: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-m", "service.entrypoints.predict_cli", str(folder / "line-a"), "--out", "results.csv"],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert {row["label"] for row in _rows(tmp_path / "results.csv")} <= {"functional", "defective"}


def test_a_missing_model_is_one_line_saying_how_to_set_model_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path), "--out", str(tmp_path / "r.csv"), "--model", str(tmp_path / "none.onnx")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("predict: error: model file")
    assert "set MODEL_PATH to a model.onnx with its model.json beside it" in line


def test_without_ray_nothing_of_ray_is_imported(folder: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    script = (
        "import sys; from service.entrypoints.predict_cli import main; "
        f"code = main([{str(folder / 'line-a')!r}, '--out', {str(tmp_path / 'r.csv')!r}]); "
        "print(code, sorted({name.split('.')[0] for name in sys.modules} & {'ray', 'pyarrow', 'pandas'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], env={"PATH": "/usr/bin:/bin", "MODEL_PATH": str(tiny_model_path),
                                             "PYTHONPATH": str(Path.cwd())},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.stdout.split("\n")[0] == "0 []", completed.stderr
