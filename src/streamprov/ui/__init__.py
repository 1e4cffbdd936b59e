"""The dashboard's static assets (HTML shell, script, styles, and the bundled uPlot charting
library, MIT-licensed, its licence in ``static/uPlot.LICENSE``), shared by the served dashboard
(``streamprov.api.ui``) and the self-contained HTML reports (``streamprov.observe.report``)."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS = ("uPlot.iife.min.js", "uPlot.min.css", "dashboard.js", "dashboard.css")
"""Files a page needs, in the order they are linked or inlined."""


def asset(name: str) -> str:
    """The text of one static asset (``ASSETS``)."""
    return (STATIC_DIR / name).read_text(encoding="utf-8")
