"""`train`'s environment: the training extra named when missing, TensorFlow's CPU-only CUDA lines dropped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.environment import CPU_ONLY_NOISE, filtered_stderr, missing_training_dependency

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["sklearn", "tensorflow", "tf2onnx", "elpv_dataset", "sklearn.model_selection"])
def test_a_missing_training_module_names_the_install(module: str) -> None:
    message = missing_training_dependency(ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert message == (
        f"{module.split('.')[0]} is not installed; it comes with the training extra: "
        "make train-deps (or: pip install -e '.[train]')"
    )


def test_any_other_missing_module_stays_a_traceback() -> None:
    assert missing_training_dependency(ModuleNotFoundError("No module named 'typo'", name="typo")) is None


def test_the_cpu_only_cuda_lines_are_dropped_and_everything_else_kept(capfd: pytest.CaptureFixture[str]) -> None:
    with filtered_stderr(CPU_ONLY_NOISE):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1 1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not "
                    b"be used.\n")
        os.write(2, b"E0000 00:00:1 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
        os.write(2, b"E0000 00:00:1 1 op_kernel.cc:1] OP_REQUIRES failed: a real error\n")
    assert capfd.readouterr().err == "E0000 00:00:1 1 op_kernel.cc:1] OP_REQUIRES failed: a real error\n"


@pytest.mark.slow
@pytest.mark.skipif(Path("/proc/driver/nvidia").exists(), reason="with a driver, TensorFlow's CUDA lines may matter")
def test_importing_tensorflow_for_training_prints_nothing_on_a_cpu_machine() -> None:
    pytest.importorskip("tensorflow", reason="the train extra")
    result = subprocess.run(
        [sys.executable, "-c", "from training.environment import quiet_tensorflow; quiet_tensorflow()"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_make_train_deps_installs_the_extra_without_starting_a_run(tmp_path: Path) -> None:
    dry = subprocess.run(
        ["make", "-n", "train-deps", f"VENV={tmp_path}/venv"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "-m pip install --quiet -e '.[train]'" in dry
    assert "-m training " not in dry


def test_make_samples_installs_the_data_set_and_copies_cells(tmp_path: Path) -> None:
    dry = subprocess.run(
        ["make", "-n", "samples", f"VENV={tmp_path}/venv"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "-m pip install --quiet 'elpv-dataset" in dry
    assert "-m training.samples --out samples" in dry
