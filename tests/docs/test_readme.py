"""The README (and the manuals' runnable pages) against a real `python -m service` over the shipped model: every
example request runs as written
(from a folder holding `samples/`) and answers 200, and each documented JSON answer has the server's shape.
Also: the contents list points at real headings, relative links resolve, and no user-facing page speaks of
issue numbers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.servers import Server, service_spec
from tests.service.helpers import gray_png
from training.samples import SamplesError, copy_samples, sample_names

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCUMENTED_URL = "http://127.0.0.1:8000"
USER_FACING = [README, REPO / "BENCHMARKS.md", REPO / "RELIABILITY.md", REPO / "models" / "README.md",
               *sorted((REPO / "docs").glob("*.md"))]  # fmt: skip
# Pages whose example requests need only the defaults (operations.md's reload needs a key and MODEL_DIR).
RUNNABLE = [README, REPO / "docs" / "explanations.md", REPO / "docs" / "open-inference-protocol.md"]
# Pages other branches write; linked from the README before they land.
WRITTEN_ELSEWHERE: set[str] = set()


@dataclass(frozen=True)
class Example:
    command: str
    documented: object | None  # the JSON block right after the command's code block, for its first request


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"(?ms)^```(\w*)\n(.*?)^```", text)


def requests_in(block: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.startswith("curl ") and DOCUMENTED_URL in line]


def examples(text: str) -> list[Example]:
    found: list[Example] = []
    blocks = fenced_blocks(text)
    for i, (language, body) in enumerate(blocks):
        commands = requests_in(body) if language == "bash" else []
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        documented = json.loads(following[1]) if commands and following[0] == "json" else None
        found += [Example(command, documented if n == 0 else None) for n, command in enumerate(commands)]
    return found


def shape_mismatches(documented: object, actual: object, where: str = "$") -> list[str]:
    """Where the documented JSON differs from the answer in keys or kinds of value (values themselves may)."""
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{where}: documented an object, got {type(actual).__name__}"]
        if set(documented) != set(actual):
            return [f"{where}: documented keys {sorted(documented)}, got {sorted(actual)}"]
        return [m for key in documented for m in shape_mismatches(documented[key], actual[key], f"{where}.{key}")]
    if isinstance(documented, list):
        if not isinstance(actual, list):
            return [f"{where}: documented a list, got {type(actual).__name__}"]
        return shape_mismatches(documented[0], actual[0], f"{where}[0]") if documented and actual else []
    kinds = {bool: (bool,), int: (int, float), float: (int, float), str: (str,), type(None): (type(None),)}
    if isinstance(actual, bool) != isinstance(documented, bool) or not isinstance(actual, kinds[type(documented)]):
        return [f"{where}: documented {documented!r}, got {actual!r}"]
    return []


def test_the_readme_documents_requests_and_answers() -> None:
    found = examples(README.read_text())
    assert len(found) >= 5
    assert sum(example.documented is not None for example in found) >= 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with samples/ as `make samples` makes it: the real cells when the data set is installed."""
    folder = tmp_path_factory.mktemp("readme")
    try:
        copy_samples(folder / "samples")
    except SamplesError:
        (folder / "samples").mkdir()
        for i, (name, _) in enumerate(sample_names()):
            (folder / "samples" / name).write_bytes(gray_png(40 + 25 * i, (300, 300)))
    return folder


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Server]:
    spec = service_spec("readme", REPO / "models" / "model.onnx", {"LOG_LEVEL": "warning"})
    with Server(spec, workdir, ready_timeout_s=90.0) as running:
        yield running


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples are curl commands")
@pytest.mark.parametrize(
    "example",
    [
        # The manuals' explanations run 81-100 occluded copies each: 30-40 s together on 2 shared cores.
        pytest.param(e, id=e.command[:60], marks=() if page == README else pytest.mark.slow)
        for page in RUNNABLE
        for e in examples(page.read_text())
    ],
)
def test_each_readme_request_answers_as_documented(example: Example, server: Server, workdir: Path) -> None:
    command = example.command.replace(DOCUMENTED_URL, server.url).replace("curl ", "curl -sS -w '\\n%{http_code}' ", 1)
    result = subprocess.run(["bash", "-c", command], cwd=workdir, capture_output=True, text=True, timeout=60)
    body, _, status = result.stdout.rpartition("\n")
    assert (result.returncode, status) == (0, "200"), f"{example.command}\n{result.stdout}{result.stderr}"
    if written := re.search(r"-o (\S+)", example.command):
        assert (workdir / written.group(1)).stat().st_size > 0
    if example.documented is not None:
        assert shape_mismatches(example.documented, json.loads(body)) == []


def _slug(heading: str) -> str:
    # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_contents_list_points_at_real_headings() -> None:
    text = README.read_text()
    headings = {_slug(h) for h in re.findall(r"(?m)^#{2,3} (.+)$", text)}
    anchors = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert anchors
    assert anchors <= headings, anchors - headings


@pytest.mark.parametrize("page", USER_FACING, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        resolved = (page.parent / target).resolve()
        if not resolved.exists() and str(resolved.relative_to(REPO)) not in WRITTEN_ELSEWHERE:
            missing.append(target)
    assert missing == []


@pytest.mark.parametrize("page", USER_FACING, ids=lambda p: str(p.relative_to(REPO)))
def test_user_facing_pages_name_features_not_issue_numbers(page: Path) -> None:
    assert re.findall(r"(?i)\bissues? \d+|\bissue-\d+", page.read_text()) == []
