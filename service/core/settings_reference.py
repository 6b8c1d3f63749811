"""docs/configuration.md, written from the settings classes: `python -m service.core.settings_reference`.

tests/service/test_config.py fails when the file and the classes differ, so the reference cannot drift.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.core.config import GROUPS, RENAMED, default_data_dir, default_model_path

TARGET = Path("docs/configuration.md")
TITLES = {
    "LimitSettings": "Limits", "ThreadSettings": "Threads", "ExplainSettings": "Explanations",
    "QualitySettings": "Live quality",
}


def _type(field: FieldInfo) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
    for noise in ("<class '", "'>", "pydantic.types.", "Annotated[", ", NoDecode]"):
        text = text.replace(noise, "")
    text = text.replace("Literal[", "one of [").replace(" | None", " or auto" if "int" in text else " or unset")
    return text.replace("|", "or")


def _default(field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "auto" if "int" in str(field.annotation) else "unset"
    if isinstance(value, list):
        return ",".join(value) or "empty"
    if isinstance(value, Path) and value == default_data_dir():  # this user's, not the machine's that wrote the file
        return "$XDG_DATA_HOME/cell-classifier (~/.local/share/cell-classifier)"
    if isinstance(value, Path) and value.is_absolute():  # found where the package is installed
        return f"<package>/{value.relative_to(default_model_path().parents[1]).as_posix()}"
    return str(value)


def _bounds(field: FieldInfo) -> str:
    words = []
    for rule in field.metadata:
        for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(rule, name, None) is not None:
                words.append(f"{sign} {getattr(rule, name)}")
    return ", ".join(words)


def reference_markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Every setting is an environment variable, read once at start-up and validated (a bad value stops the",
        "service with one line naming it). Durations are in seconds (`_S`), sizes in bytes (`_BYTES`); `auto`",
        "lets the service size the setting itself. Written by `python -m service.core.settings_reference`",
        "from `service/core/config.py`; a test fails when they differ.",
        "",
    ]
    for group in GROUPS:
        title = TITLES.get(group.__name__, group.__name__.removesuffix("Settings"))
        lines += [f"## {title}", "", (group.__doc__ or "").strip(), ""]
        lines += ["| variable | type | default | bounds | meaning |", "|---|---|---|---|---|"]
        for name, field in group.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(
                f"| `{name.upper()}` | {_type(field)} | `{_default(field)}` | {_bounds(field)} | {meaning} |"
            )
        lines.append("")
    lines += ["## Renamed", "", "Refused at start-up with the new name:", ""]
    lines += [f"- `{old}` → `{new}`" for old, new in RENAMED.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET
    target.write_text(reference_markdown())
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
