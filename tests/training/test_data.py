"""Loading labelled images from a folder of classes, and the stratified split."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.core.preprocessing import preprocess_bytes
from tests.training.toy import encoded, gradient, sample_file
from training.data import DataError, LabelledImages, load_folder, positive_split, split, with_positive_class


def write_png(path: Path, level: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (120, 80), level).save(path)
    return path


@pytest.mark.parametrize("kind", ["png", "jpeg", "rgba-png", "16-bit-png"])
def test_loader_gives_the_same_tensor_as_the_service_for_a_file(kind: str, tmp_path: Path) -> None:
    data = sample_file(kind)
    suffix = ".jpg" if kind == "jpeg" else ".png"
    sample = tmp_path / "a" / f"sample{suffix}"
    sample.parent.mkdir()
    sample.write_bytes(data)
    write_png(tmp_path / "b" / "other.png")

    loaded = load_folder(tmp_path)

    index = loaded.sources.index(str(sample))
    served = preprocess_bytes(data)
    assert loaded.x.dtype == served.dtype == np.float32
    assert loaded.x[index].shape == served.shape == (100, 100, 1)
    np.testing.assert_array_equal(loaded.x[index], served)


def test_loader_keeps_raw_gray_levels_for_the_model_to_rescale(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "x.png", level=17)
    write_png(tmp_path / "b" / "x.png", level=230)

    loaded = load_folder(tmp_path)

    assert loaded.x.shape == (2, 100, 100, 1)
    assert np.unique(loaded.x[0]).tolist() == [17.0]
    assert np.unique(loaded.x[1]).tolist() == [230.0]


def test_load_folder_sorts_class_names_and_makes_the_second_positive(tmp_path: Path) -> None:
    for name, count in (("zebra", 3), ("apple", 2)):
        for i in range(count):
            write_png(tmp_path / name / f"{i}.png")
    write_png(tmp_path / "zebra" / "nested" / "deeper.PNG")
    (tmp_path / "zebra" / "notes.txt").write_text("not an image")
    write_png(tmp_path / ".thumbnails" / "hidden.png")
    write_png(tmp_path / "stray.png")

    loaded = load_folder(tmp_path)

    assert loaded.class_names == ("apple", "zebra")
    assert loaded.class_counts() == {"apple": 2, "zebra": 4}
    assert loaded.y.tolist() == [0, 0, 1, 1, 1, 1]
    assert loaded.y.dtype == np.int64
    assert [Path(s).parent.name for s in loaded.sources] == ["apple"] * 2 + ["zebra"] * 3 + ["nested"]
    assert len(loaded) == 6


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        pytest.param(["only/a.png"], r"exactly two class subfolders, found 1: \['only'\]", id="one-class"),
        pytest.param(["a/1.png", "b/1.png", "c/1.png"], r"exactly two class subfolders, found 3", id="three-classes"),
        pytest.param(["a/1.png", "b/"], r"class folder .*b holds no images", id="empty-class-folder"),
        pytest.param(["a/1.png", "b/readme.txt"], r"class folder .*b holds no images", id="class-without-images"),
    ],
)
def test_load_folder_refuses_an_unusable_layout(layout: list[str], message: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    for entry in layout:
        path = root / entry
        if entry.endswith("/"):
            path.mkdir(parents=True)
        elif entry.endswith(".png"):
            write_png(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("text")

    with pytest.raises(DataError, match=message):
        load_folder(root)


def test_load_folder_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"data folder {re.escape(str(tmp_path))}/missing does not exist"):
        load_folder(tmp_path / "missing")


PNG = encoded(Image.fromarray(gradient()), "PNG")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"this is not an image at all", "not a decodable image", id="text"),
        pytest.param(PNG[: len(PNG) // 2], "truncated or corrupt", id="truncated-png"),
        pytest.param(encoded(Image.new("L", (16, 16)), "ICO"), "format ICO is not supported", id="unsupported"),
    ],
)
def test_load_folder_names_the_file_that_cannot_be_read(content: bytes, reason: str, tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "good.png")
    bad = tmp_path / "b" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(content)

    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}: .*{reason}") as error:
        load_folder(tmp_path)
    assert isinstance(error.value.__cause__, ValueError | OSError)


def labelled(negatives: int, positives: int) -> LabelledImages:
    count = negatives + positives
    return LabelledImages(
        x=np.arange(count, dtype=np.float32).reshape(count, 1, 1, 1),
        y=np.array([0] * negatives + [1] * positives),
        sources=tuple(f"img{i}.png" for i in range(count)),
        class_names=("negative", "positive"),
    )


@pytest.mark.parametrize("test_fraction", [0.2, 0.25, 0.5])
@pytest.mark.parametrize("validation_fraction", [0.0, 0.15, 0.3])
def test_split_is_stratified_disjoint_and_respects_the_fractions(
    test_fraction: float, validation_fraction: float
) -> None:
    data = labelled(negatives=70, positives=30)

    parts = split(data, test_fraction, validation_fraction, seed=7)

    train, validation, test = (set(p.sources) for p in (parts.train, parts.validation, parts.test))
    assert not train & validation
    assert not train & test
    assert not validation & test
    assert train | validation | test == set(data.sources)
    assert len(parts.test) == math.ceil(test_fraction * len(data))
    rest = len(data) - len(parts.test)
    assert len(parts.validation) == (math.ceil(validation_fraction * rest) if validation_fraction else 0)
    for part, share in ((parts.test, test_fraction), (parts.validation, validation_fraction * (1 - test_fraction))):
        for label, total in ((0, 70), (1, 30)):
            assert abs(int((part.y == label).sum()) - share * total) <= 1, (part.class_counts(), share)
    for part in (parts.train, parts.validation, parts.test):
        # Images stay with their labels and sources.
        assert [data.sources.index(s) for s in part.sources] == part.x.ravel().astype(int).tolist()
        assert part.y.tolist() == [data.y[data.sources.index(s)] for s in part.sources]
        assert part.class_names == data.class_names


def test_split_is_deterministic_for_a_seed_and_differs_between_seeds() -> None:
    data = labelled(negatives=40, positives=20)

    first, again, other = (split(data, 0.25, 0.2, seed=s) for s in (3, 3, 4))

    for a, b in ((first.train, again.train), (first.validation, again.validation), (first.test, again.test)):
        assert a.sources == b.sources
    assert first.test.sources != other.test.sources


def test_split_refuses_a_class_with_fewer_than_four_images() -> None:
    with pytest.raises(DataError, match=r"at least 4 images of each class: \{'negative': 10, 'positive': 3\}"):
        split(labelled(negatives=10, positives=3), 0.25, 0.15, seed=0)


@pytest.mark.parametrize(
    ("test_fraction", "validation_fraction"),
    [
        pytest.param(0.05, 0.15, id="test-set-too-small"),
        pytest.param(0.25, 0.05, id="validation-set-too-small"),
        pytest.param(0.25, 0.98, id="nothing-left-to-train"),
    ],
)
def test_split_explains_fractions_the_data_cannot_satisfy(test_fraction: float, validation_fraction: float) -> None:
    with pytest.raises(DataError, match=rf"cannot split .* with test fraction {test_fraction} and validation"):
        split(labelled(negatives=10, positives=10), test_fraction, validation_fraction, seed=0)


def _labelled(n_per_class: int = 8) -> LabelledImages:
    y = np.array([0, 1] * n_per_class)
    return LabelledImages(np.zeros((len(y), 0), np.float32), y, tuple(f"{i}.png" for i in range(len(y))), ("a", "b"))


def test_positive_class_names_label_1_and_flips_labels_and_soft_targets() -> None:
    images = _labelled()
    flipped = with_positive_class(images, "a")
    assert flipped.class_names == ("b", "a")
    np.testing.assert_array_equal(flipped.y, 1 - images.y)
    np.testing.assert_array_equal(flipped.soft_targets, 1.0 - images.soft_targets)
    assert with_positive_class(images, "b") is images
    assert with_positive_class(images, None) is images


def test_the_split_does_not_depend_on_which_class_is_positive() -> None:
    images = _labelled(12)
    parts = split(images, 0.25, 0.15, seed=0)
    flipped = positive_split(parts, "a")
    before_after = ((parts.train, flipped.train), (parts.validation, flipped.validation), (parts.test, flipped.test))
    for before, after in before_after:
        assert after.sources == before.sources
        np.testing.assert_array_equal(after.y, 1 - before.y)


def test_a_positive_class_that_is_not_a_class_is_refused() -> None:
    with pytest.raises(DataError, match=r"^--positive-class 'c' is not one of the classes \['a', 'b'\]$"):
        with_positive_class(_labelled(), "c")
