"""The README's settings table, generated from :class:`Settings` so that it cannot drift (see its test)."""

from __future__ import annotations

import json
from typing import Any

from service.settings import Settings

__all__ = ["settings_table"]


def _default(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `MEDSCREEN_{name.upper()}` | {_default(default)} | {description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(settings_table() + "\n")
