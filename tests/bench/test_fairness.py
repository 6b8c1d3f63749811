"""bench.fairness: the report's arithmetic, the large request's encoding and the targets it feeds."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from PIL import Image
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartParser

from bench import fairness
from bench.fairness import FairnessResult, LargeOutcomes, multipart_body
from bench.load import LoadResult
from bench.report import _fairness
from bench.targets import request_path_targets


def load_result(p99_ms: float | None, requests: int, non_2xx: int = 0, socket_errors: int = 0) -> LoadResult:
    return LoadResult(4, 2, 3.0, requests, requests / 3.0, p99_ms, p99_ms, p99_ms, p99_ms, p99_ms, non_2xx,
                      socket_errors, 1.0)


def result(
    alone_p99: float | None, beside_p99: float | None, non_2xx: int = 0, socket_errors: int = 0
) -> FairnessResult:
    large = LargeOutcomes({"200": 3, "503": 5}, {"ReadTimeout": 1})
    return FairnessResult("service", 3, 3_900_000, load_result(alone_p99, 900),
                          load_result(beside_p99, 700, non_2xx, socket_errors), large)


def test_the_ratio_is_p99_beside_over_p99_alone() -> None:
    assert result(50.0, 200.0).p99_ratio == pytest.approx(4.0)
    assert result(None, 200.0).p99_ratio is None
    assert result(50.0, None).p99_ratio is None


def test_refused_and_failed_small_requests_are_counted_together() -> None:
    assert result(50.0, 60.0, non_2xx=2, socket_errors=3).small_failures == 5
    assert result(50.0, 60.0).small_failures == 0


def test_large_requests_count_answers_and_transport_errors() -> None:
    assert result(50.0, 60.0).large.requests == 9


def test_the_targets_hold_at_5x_and_no_failure() -> None:
    found = {t.name: t for t in request_path_targets([], ["elpv"], [], result(50.0, 240.0, non_2xx=1))}
    ratio = found["elpv beside 16 x 64 MP uploads: small p99 vs alone"]
    failures = found["elpv beside 16 x 64 MP uploads: small requests refused or failed"]
    assert (ratio.value, ratio.verdict) == (pytest.approx(4.8), "PASS")
    assert (failures.value, failures.verdict, failures.margin) == (1.0, "MISS", None)
    assert "elpv beside 16 x 64 MP uploads: small p99 vs alone" not in {
        t.name for t in request_path_targets([], ["elpv"], [], None)
    }


def test_the_report_shows_both_phases_and_the_large_outcomes() -> None:
    text = "\n".join(_fairness(result(50.0, 200.0), None))
    assert "| alone | 300.0 | 50.0 | 50.0 | 50.0 | 900 | 0 | 0 |" in text
    assert "p99 beside ÷ alone: 4.00" in text
    assert "9 sent; answers 3 x 200, 5 x 503; transport errors 1 x ReadTimeout" in text


async def _parts(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    form = await MultiPartParser(Headers({"content-type": content_type}), stream(), max_files=100).parse()
    return [(upload.filename, await upload.read()) for _, upload in form.multi_items()]


def test_the_large_request_is_one_multipart_body_of_the_png_repeated() -> None:
    png = b"\x89PNG fake bytes"
    body, headers = multipart_body(png, 16)
    assert parse_options_header(headers["Content-Type"])[0] == b"multipart/form-data"
    parts = anyio.run(_parts, body, headers["Content-Type"])
    assert [name for name, _ in parts] == [f"large-{i}.png" for i in range(16)]
    assert {data for _, data in parts} == {png}


def test_the_large_png_is_made_once_at_the_side_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fairness, "LARGE_SIDE", 400)
    path = fairness.large_png(tmp_path)
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        assert (image.size, image.mode, image.format) == ((400, 400), "L", "PNG")
    made = path.stat().st_mtime_ns
    assert fairness.large_png(tmp_path) == path
    assert path.stat().st_mtime_ns == made


def test_a_fairness_run_that_failed_says_why() -> None:
    assert "Not measured: the service did not start" in "\n".join(_fairness(None, "the service did not start"))
    assert _fairness(None, None) == []
