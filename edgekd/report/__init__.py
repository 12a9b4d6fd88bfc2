"""The run report: a typed model built from bench records and manifests (build), rendered to JSON, Markdown
and HTML (write). `write_report` is the entry point."""

from edgekd.report.write import ReportFiles, write_report

__all__ = ["ReportFiles", "write_report"]
