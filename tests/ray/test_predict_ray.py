"""`predict --ray` on a real two-node cluster: the single-machine CLI's rows, in CSV or Parquet, and every row
still written when the worker node is lost mid-run."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from service.core.config import Settings
from service.entrypoints.predict_cli import COLUMNS, main
from tests.ray.conftest import NO_RAY, LocalCluster
from tests.service.helpers import gray_png

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]
ray = pytest.importorskip("ray", reason=NO_RAY)
pq = pytest.importorskip("pyarrow.parquet", reason=NO_RAY)


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_PATH", "MODEL_DIR", "THRESHOLD", "MAX_FILE_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAX_FILE_BYTES", "2000")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 gray PNGs in two subfolders, and one file of each kind the CLI answers with a reason."""
    root = tmp_path_factory.mktemp("images")
    for i in range(48):
        sub = root / f"line-{i % 2}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i:03d}.png").write_bytes(gray_png(5 * i))
    (root / "notes.txt").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.png").write_bytes(gray_png(99)[:40])
    (root / "large.png").write_bytes(gray_png(7, (400, 400)) + bytes(3000))  # over MAX_FILE_BYTES=2000
    locked = root / "locked.png"
    locked.write_bytes(gray_png(1))
    locked.chmod(0)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def _arguments(folder: Path, model: Path) -> list[str]:
    return [str(folder), str(folder / "missing.png"), str(folder / "line-1" / "*.png"), "--model", str(model)]


def test_scoring_a_folder_on_the_cluster_equals_the_single_machine_cli(
    ray_nodes: LocalCluster, folder: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    arguments = _arguments(folder, tiny_model_path)
    assert main([*arguments, "--out", str(tmp_path / "one.csv")]) == 0
    assert main([*arguments, "--out", str(tmp_path / "ray.csv"), "--ray", ray_nodes.cluster.address]) == 0

    expected = _rows(tmp_path / "one.csv")
    assert _rows(tmp_path / "ray.csv") == expected
    errors = {Path(row["path"]).name: row["error"] for row in expected if row["error"]}
    assert errors["large.png"] == "the file is larger than the 2000-byte limit"
    assert errors["truncated.png"].startswith("file 'truncated.png': ")
    assert errors["missing.png"] == "no such file or folder"
    root = os.geteuid() == 0
    if not root:  # root reads a file whatever its mode
        assert errors["locked.png"] == "cannot read the file: Permission denied"
    assert len(expected) - len(errors) == 48 + 24 + root  # the folder's images, then the glob's again


def test_a_uri_is_scored_through_its_pyarrow_filesystem_into_parquet(
    ray_nodes: LocalCluster, folder: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    model = ["--model", str(tiny_model_path)]
    assert main([str(folder / "line-0"), str(folder / "empty.png"), "--out", str(tmp_path / "one.csv"), *model]) == 0
    assert main([f"file://{folder}/line-0", f"file://{folder}/empty.png", "--out", str(tmp_path / "ray.parquet"),
                 *model, "--ray", ray_nodes.cluster.address]) == 0  # fmt: skip

    expected = _rows(tmp_path / "one.csv")
    table = pq.read_table(tmp_path / "ray.parquet")
    assert tuple(table.column_names) == COLUMNS
    assert str(table.schema.field("probability").type) == "double"
    got = table.to_pylist()
    assert [row["path"] for row in got] == [f"file://{row['path']}" for row in expected]
    for row, answer in zip(expected, got, strict=True):
        assert (answer["label"] or "", answer["model_version"] or "", answer["error"] or "") == (
            row["label"], row["model_version"], row["error"])
        if row["probability"]:
            assert answer["probability"] == pytest.approx(float(row["probability"]), abs=1e-6)
        else:
            assert answer["probability"] is None
    assert got[-1]["error"] == "file 'empty.png': the file is empty"


def test_uris_are_listed_as_the_cli_lists_paths(folder: Path) -> None:
    from service.entrypoints.predict_ray import listing

    local = [item["path"] for item in listing([str(folder / "line-1")])]
    assert [item["path"] for item in listing([f"file://{folder}/line-1"])] == [f"file://{p}" for p in local]
    globbed = [Path(item["path"]) for item in listing([f"file://{folder}/line-*/0[01]?.png"])]
    assert sorted(path.name for path in globbed) == [f"{i:03d}.png" for i in range(20)]
    assert globbed == sorted(globbed)
    missing = listing([f"file://{folder}/none", f"file://{folder}/*.gif"])
    assert [(item["path"], item["refused"]) for item in missing] == [
        (f"file://{folder}/none", "no such file or folder"), (f"file://{folder}/*.gif", "the pattern matches no file"),
    ]


def test_ray_is_usage_error_when_it_swallows_a_path(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--ray", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "r.csv")])
    assert exited.value.code == 2


def test_a_model_that_does_not_load_is_one_line_and_exit_2(
    ray_nodes: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(tmp_path), "--out", str(tmp_path / "r.csv"), "--model", str(tmp_path / "none.onnx"),
                 "--ray", ray_nodes.cluster.address])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("predict: error: model file")


def test_every_row_is_written_when_the_worker_node_is_lost(
    ray_nodes: LocalCluster, folder: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    """Last in this module: the cluster has one node after it."""
    from service.entrypoints.predict_ray import listing, score

    assert main([str(folder), "--model", str(tiny_model_path), "--out", str(tmp_path / "one.csv")]) == 0
    expected = _rows(tmp_path / "one.csv")
    settings = Settings(model_path=tiny_model_path, max_batch_size=1)  # groups of 4 files: many batches
    got: list[dict] = []
    for table in score(settings, listing([str(folder)]), None):
        if not got:  # the first rows are back, most of the files are still to score
            assert table.num_rows < len(expected) / 4
            ray_nodes.cluster.remove_node(ray_nodes.worker, allow_graceful=False)
        got += table.to_pylist()
    assert len(got) == len(expected)
    for row, answer in zip(expected, got, strict=True):
        assert (answer["path"], answer["label"] or "", answer["error"] or "") == (
            row["path"], row["label"], row["error"])
        if row["probability"]:
            assert answer["probability"] == pytest.approx(float(row["probability"]), abs=1e-6)
