"""The syrupy extension that stores claim snapshot values and compares them with tolerances.

In a test: ``assert snapshot.use_extension(NumericSnapshotExtension) == snapshot_value(result, table)``;
``pytest --snapshot-update`` records new numbers (see ``tests/test_snapshots_tiny.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from harness.claims.base import Claim, ClaimResult
from harness.snapshots.values import UPDATE_HINT, Comparison, compare, dumps, loads, registered_claim, snapshot_value

if TYPE_CHECKING:
    from syrupy.types import (
        PropertyFilter,
        PropertyMatcher,
        SerializableData,
        SerializedData,
    )


class NumericSnapshotExtension(SingleFileSnapshotExtension):
    """One JSON file per snapshot; numbers compared with the claim's tolerances.

    ``assert snapshot(extension_class=NumericSnapshotExtension) == snapshot_value(result, table)``;
    ``--snapshot-update`` records new numbers (only where they moved beyond a tolerance,
    or the version changed: numbers within tolerance keep their recorded values)."""

    _write_mode = WriteMode.TEXT
    file_extension = "json"

    @classmethod
    def claim_for(cls, claim_id: str) -> Claim | None:
        """The claim whose tolerances apply (subclasses may supply their own)."""
        return registered_claim(claim_id)

    def serialize(
        self,
        data: SerializableData,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> SerializedData:
        if isinstance(data, ClaimResult):
            data = snapshot_value(data)
        if not isinstance(data, Mapping) or "claim" not in data:
            raise TypeError(
                "NumericSnapshotExtension snapshots a claim result: pass snapshot_value(result, table) "
                f"(a dict with 'claim', 'version', ...), not {type(data).__name__}."
            )
        return dumps(data)

    def _comparison(self, serialized_data: Any, snapshot_data: Any) -> Comparison | None:
        got, expected = loads(serialized_data), loads(snapshot_data)
        if got is None or expected is None:
            return None
        return compare(expected, got, self.claim_for(str(got.get("claim"))))

    def matches(self, *, serialized_data: SerializableData, snapshot_data: SerializableData) -> bool:
        comparison = self._comparison(serialized_data, snapshot_data)
        return comparison is not None and comparison.ok

    def diff_lines(self, serialized_data: SerializedData, snapshot_data: SerializedData) -> Iterator[str]:
        got = loads(serialized_data)
        if loads(snapshot_data) is None:
            claim = got.get("claim") if got else "?"
            yield f"{claim}: no snapshot recorded yet (or it is not valid JSON); run pytest with {UPDATE_HINT} to record it."
            return
        comparison = self._comparison(serialized_data, snapshot_data)
        if comparison is None:
            yield "The received value is not a claim snapshot value."
            return
        yield from comparison.message().splitlines()
