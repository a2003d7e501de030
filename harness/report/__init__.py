"""Outputs of a run: CSVs, figures, claims.json."""

from harness.report.outputs import ReportWriter

__all__ = ["ReportWriter"]
