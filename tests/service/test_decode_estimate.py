"""estimate_decode_bytes is an upper bound of the real peak memory of preprocess_image, for every mode.

Pillow allocates pixels outside tracemalloc's view, so bench.decode_memory preprocesses each image in a
fresh interpreter and reads the kernel's peak RSS (VmHWM, reset after the header is read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.decode_memory import CASES, measure, size_for

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset and read the peak RSS"
)


@pytest.mark.parametrize("case", list(CASES))
def test_the_estimate_is_an_upper_bound_of_the_measured_peak(case: str) -> None:
    size = size_for(case, megapixels=3)
    m = measure(case, CASES[case](size), size)
    assert m.peak_bytes <= m.estimate_bytes, f"{case}: peak {m.peak_bytes} > estimate {m.estimate_bytes}"


# PNG paths at full size: decoded image + gray (and its rotated copy) dominate, the margin is thinnest.
@pytest.mark.slow
@pytest.mark.parametrize("case", ["RGBA PNG, EXIF rotated", "I;16 PNG", "RGB JPEG progressive"])
def test_the_estimate_is_an_upper_bound_at_64_megapixels(case: str) -> None:
    size = size_for(case, megapixels=64)
    m = measure(case, CASES[case](size), size)
    assert m.peak_bytes <= m.estimate_bytes, f"{case}: peak {m.peak_bytes} > estimate {m.estimate_bytes}"
