"""The model card's error breakdown: counts per group add up, and it refuses data it cannot rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.model_factory import write_tiny_metadata
from training.breakdown import accuracy_by_group, main, markdown


def test_accuracy_by_group_counts_correct_answers_per_group_and_overall() -> None:
    groups = np.array(["1/3", "0/3", "1/3", "3/3", "0/3"])
    y = np.array([0, 0, 0, 1, 0])
    probability = np.array([0.9, 0.1, 0.2, 0.4, 0.6])

    rows = accuracy_by_group(groups, y, probability, threshold=0.5)

    assert rows == [("0/3", 2, 1), ("1/3", 2, 1), ("3/3", 1, 0), ("all", 5, 2)]
    assert accuracy_by_group(groups, y, probability, threshold=0.35)[2] == ("3/3", 1, 1)


def test_markdown_writes_one_row_per_group_with_its_accuracy() -> None:
    table = markdown("cell type", [("mono", 4, 3), ("all", 8, 6)])

    assert table.splitlines() == [
        "| cell type | images | correct | accuracy |",
        "|---|---|---|---|",
        "| mono | 4 | 3 | 0.750 |",
        "| all | 8 | 6 | 0.750 |",
    ]


def test_breakdown_refuses_a_model_not_trained_on_elpv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    write_tiny_metadata(model, dataset={"name": "folder"})

    assert main(["--model", str(model)]) == 2
    assert capsys.readouterr().err == "breakdown: only the ELPV data set can be rebuilt from metadata\n"


def test_breakdown_names_the_card_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    model.with_suffix(".json").write_text(json.dumps({"dataset": {"name": "elpv"}}))
    assert main(["--model", str(model)]) == 2
    assert capsys.readouterr().err.startswith(f"breakdown: model metadata {model.with_suffix('.json')} is invalid")
