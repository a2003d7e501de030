"""Where a claim is known not to replicate on a model: the one place that says so.

Each entry maps (claim id, model name, lens) to the reason, with the numbers we saw.
A claim listed here still runs and is reported with its real verdict; the test is an
expected failure (strict: if it starts to replicate, the test fails until the entry is
removed). Never loosen a threshold instead of adding an entry here.
"""

from __future__ import annotations

EXPECTED_NOT_REPLICATED: dict[tuple[str, str, str], str] = {}
