"""Reading JSON Lines data files: one place that skips blank lines and names the file and
line of a line that is not JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def jsonl_records(path: Path | str) -> Iterator[tuple[int, str, object]]:
    """``(line number, "path:line", parsed value)`` for every non-blank line of ``path``;
    a line that is not valid JSON raises ``ValueError`` naming its file and line."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                yield line_no, where, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err}).") from None
