"""Training fixtures: a toy folder of classes and one tiny model fitted on it, both built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.training.toy import TINY_BATCH_SIZE, TINY_EPOCHS, Fitted, make_tiny_model, write_toy_folder

if TYPE_CHECKING:  # TensorFlow is imported lazily, so collecting other tests stays quick
    from training.data import Split


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 bright and 64 dark 100x100 noisy gray PNGs in two class folders."""
    return write_toy_folder(tmp_path_factory.mktemp("toy"), per_class=64, seed=0)


@pytest.fixture(scope="session")
def toy_split(toy_folder: Path) -> Split:
    from training.data import load_folder, split

    return split(load_folder(toy_folder), test_fraction=0.25, validation_fraction=0.15, seed=0)


@pytest.fixture(scope="session")
def fitted_tiny(toy_split: Split, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    """The tiny variant fitted for a few epochs on the toy set, through training.fit.fit."""
    from training.fit import CheckpointPaths, FitSettings, fit

    model = make_tiny_model(seed=0)
    checkpoints = CheckpointPaths(tmp_path_factory.mktemp("checkpoints"))
    assert len(toy_split.train) % TINY_BATCH_SIZE == 0
    settings = FitSettings(epochs=TINY_EPOCHS, batch_size=TINY_BATCH_SIZE, seed=0)
    throughput, epochs_run = fit(model, toy_split.train, toy_split.validation, settings, checkpoints)
    return Fitted(model, throughput, epochs_run, checkpoints)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Keras 3 on NumPy 2 warns about its own __array__ once per batch; nothing a test here can act on.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"))


@pytest.fixture(autouse=True)
def keras_dtype_policy_restored() -> Iterator[None]:
    """Each test leaves Keras' global dtype policy as it found it: the accelerator search's in-process run set
    mixed_bfloat16, and every model built after it in the suite's process exported an ONNX file onnxruntime
    refused (float16 and bfloat16 in one Mul)."""
    import keras

    before = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(before)
