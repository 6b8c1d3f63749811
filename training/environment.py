"""What `train` needs from its environment: the training extra, and TensorFlow imported without noise.

A serving install (`make serve`) has none of TensorFlow, tf2onnx, scikit-learn or the data set, so a missing
one is answered with the command that installs them, not a traceback. On a machine without an NVIDIA driver,
TensorFlow's import and its first device query print lines about CUDA (`Could not find cuda drivers`,
`failed call to cuInit`) that look like errors and are not: training runs on the CPU either way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

INSTALL = "make train-deps (or: pip install -e '.[train]')"
# Top-level modules of the train extra in pyproject.toml, by the name `import` uses.
TRAINING_MODULES = frozenset({"tensorflow", "keras", "tf2onnx", "onnx", "sklearn", "elpv_dataset", "matplotlib"})
# TensorFlow's C++ start-up lines on a CPU-only machine; anything else written meanwhile is passed through.
CPU_ONLY_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|cuda_platform\.cc.*failed call to cuInit"
    r"|cuda_executor\.cc|cuda_diagnostics\.cc"
    r"|cpu_feature_guard\.cc|^To enable the following instructions: .*rebuild TensorFlow"
    r"|oneDNN custom operations are on"
)
NVIDIA_DRIVER = Path("/proc/driver/nvidia")


def check_training_dependencies() -> None:
    """Raises ModuleNotFoundError for the first module of the train extra that is not installed, before a run
    that would otherwise fail on it only at the export, an hour in."""
    for module in sorted(TRAINING_MODULES):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def missing_training_dependency(exc: ModuleNotFoundError) -> str | None:
    """One line naming what to install when `exc` is a module of the train extra; None for anything else."""
    module = (exc.name or "").split(".")[0]
    if module not in TRAINING_MODULES:
        return None
    return f"{module} is not installed; it comes with the training extra: {INSTALL}"


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern[str]) -> Iterator[None]:
    """Lines written to file descriptor 2 inside the block (C++ libraries write there, not to sys.stderr),
    with those matching `noise` dropped; the rest is written out when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not noise.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def quiet_tensorflow(driver: Path = NVIDIA_DRIVER) -> None:
    """Imports TensorFlow and Keras and lists the devices once, without the CPU-only CUDA lines; with an NVIDIA
    driver present nothing is filtered (its messages may then matter). Also drops what a user cannot act on:
    Keras' note that fit's shuffle flag is ignored for a tf.data.Dataset (training shuffles the Dataset
    itself) and tf2onnx's per-pass optimizer lines (the export logs its own verified result)."""
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed, but will be ignored", category=UserWarning)
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    if driver.exists():
        import keras
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # drops the informational lines, keeps warnings
    with filtered_stderr(CPU_ONLY_NOISE):
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()
