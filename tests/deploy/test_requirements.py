"""The image installs requirements/runtime.txt with --no-deps, so the pins must close over pyproject's needs."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def pinned() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "runtime.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements/runtime.txt: '{line}' is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def needed() -> set[str]:
    """The service's dependencies and, as installed here, theirs (with the extras asked for), transitively."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(text) for text in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(child)
    return seen


def test_every_runtime_dependency_is_pinned() -> None:
    missing = needed() - set(pinned())
    assert not missing, f"pin these in requirements/runtime.txt (README: regenerate with pip freeze): {missing}"


def test_the_dockerfile_installs_the_pins_and_nothing_else() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY requirements/runtime.txt" in dockerfile
    assert "pip install --no-deps -r requirements.txt" in dockerfile
    assert "!requirements/runtime.txt" in (REPO / ".dockerignore").read_text()
