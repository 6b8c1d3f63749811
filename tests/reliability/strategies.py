"""Hypothesis strategies for hostile uploads: random bytes and valid files with bit flips, truncations and splices."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.reliability.samples import bombs, valid_images, zero_size_images

# RELIABILITY_EXAMPLES=10 multiplies every max_examples by 10 for a longer local fuzzing run.
SCALE = float(os.environ.get("RELIABILITY_EXAMPLES", "1"))


def fuzz_settings(max_examples: int, *, deadline_ms: int | None = 5000) -> settings:
    """Modest by default so the suite stays fast. Every seed decodes in milliseconds; the deadline is far above
    that because this machine may be shared with a training job, and pytest-timeout catches a real hang."""
    return settings(
        max_examples=max(1, int(max_examples * SCALE)),
        deadline=deadline_ms,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        derandomize=SCALE == 1,
        database=None,
    )


@st.composite
def _mutate(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "splice", "delete", "duplicate"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            donor = draw(st.sampled_from(sorted(valid_images().values())))
            start = draw(st.integers(0, len(donor) - 1))
            data[at:at] = donor[start : start + draw(st.integers(1, 64))]
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


def valid_files() -> st.SearchStrategy[bytes]:
    return st.sampled_from(sorted(valid_images().values()))


def mutated_files(prefix: str = "") -> st.SearchStrategy[bytes]:
    """A valid file of any format (or of the seeds whose names start with `prefix`) with one to four mutations."""
    if not prefix:
        return valid_files().flatmap(_mutate)
    seeds = sorted(data for name, data in valid_images().items() if name.startswith(prefix))
    return st.sampled_from(seeds).flatmap(_mutate)


def headers_and_noise() -> st.SearchStrategy[bytes]:
    """The first bytes of a real file (magic number and header) followed by random bytes."""
    return st.tuples(valid_files(), st.integers(1, 40), st.binary(max_size=512)).map(lambda t: t[0][: t[1]] + t[2])


def hostile_files() -> st.SearchStrategy[bytes]:
    """Everything a hostile or broken client might send as an image."""
    special = sorted({**zero_size_images(), **bombs()}.values())
    return st.one_of(
        st.binary(max_size=2048),
        headers_and_noise(),
        mutated_files(),
        st.sampled_from(special),
        valid_files(),
    )
