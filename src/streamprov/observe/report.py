"""HTML pages: the dashboard's shell (assets linked from ``/ui/static``) and self-contained
reports (every asset and the data inlined: the file opens anywhere, offline) drawn by the same
script (``streamprov/ui/static/dashboard.js``).

Reports: ``replay_report`` (a replay's figures, latency CDF, throughput over time, per-hop
latency), ``compare_report`` (replays side by side), ``tuning_report`` (evaluations, cost vs p99
with the SLO bound, and the evaluation replays' CDFs and throughput).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from streamprov.errors import InvalidInput
from streamprov.ui import asset

if TYPE_CHECKING:
    from streamprov.app import App

PAGES = {
    "overview": "streams, replays and tuning jobs",
    "record": "a record's lineage",
    "replay": "replay report",
    "compare": "replays side by side",
    "clocks": "node clocks",
    "scaling": "scaling audit trail",
    "tune": "tuning job",
}
"""Dashboard pages (``/ui/<page>``; ``overview`` is ``/ui``) and their titles."""

_NAV = (("/ui", "overview"), ("/ui/record", "lineage"), ("/ui/clocks", "clocks"),
        ("/ui/scaling", "scaling"))


def _shell(title: str, head: str, body_attrs: str, nav: bool, tail: str) -> str:
    links = "".join(f'<a href="{href}">{html.escape(text)}</a>' for href, text in _NAV)
    header = (f"<header><strong>streamprov</strong>{links if nav else ''}"
              f"<span>{html.escape(title)}</span></header>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>streamprov: {html.escape(title)}</title>{head}</head>"
            f"<body {body_attrs}>{header}<main id=\"main\"></main>{tail}</body></html>\n")


def dashboard_page(page: str, static_prefix: str = "/ui/static") -> str:
    """The HTML of a dashboard page; its script fetches the data from the API."""
    if page not in PAGES:
        raise InvalidInput(f"unknown dashboard page {page!r}", field="page")
    head = (f'<link rel="stylesheet" href="{static_prefix}/uPlot.min.css">'
            f'<link rel="stylesheet" href="{static_prefix}/dashboard.css">'
            f'<script src="{static_prefix}/uPlot.iife.min.js"></script>'
            f'<script src="{static_prefix}/dashboard.js"></script>')
    return _shell(PAGES[page], head, f'data-page="{page}"', True,
                  "<script>SP.start();</script>")


def _inline_script(text: str) -> str:
    # a "</script" inside inlined code or data would end the element early
    return "<script>" + text.replace("</script", "<\\/script") + "</script>"


def self_contained(title: str, data: dict[str, Any]) -> str:
    """A report page with uPlot, the dashboard script, the styles and ``data`` inlined."""
    head = ("<style>" + asset("uPlot.min.css") + "\n" + asset("dashboard.css") + "</style>"
            + _inline_script(asset("uPlot.iife.min.js")) + _inline_script(asset("dashboard.js")))
    payload = orjson.dumps(data).decode()
    tail = _inline_script(f"SP.renderReport(document.getElementById('main'), {payload});")
    return _shell(title, head, 'data-page="report"', False, tail)


def write_report(path: str | Path, page: str) -> Path:
    """Write ``page`` to ``path``; ``InvalidInput`` naming ``report`` when it cannot."""
    out = Path(path)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"--report: cannot write {out}: {exc.strerror}",
                           field="report") from None
    return out


def check_report_path(path: str | Path) -> Path:
    """Refuse, before any work, a report path whose folder does not exist."""
    out = Path(path)
    if not out.parent.is_dir():
        raise InvalidInput(f"--report: folder {out.parent} does not exist", field="report")
    if out.is_dir():
        raise InvalidInput(f"--report: {out} is a folder; give a file name", field="report")
    return out


# -- report data ---------------------------------------------------------------------------------
def replay_report(application: App, doc: dict[str, Any]) -> str:
    from streamprov.observe.series import replay_series

    data = {"kind": "replay", "replay": {"doc": doc, "series": replay_series(application, doc)}}
    return self_contained(f"replay {doc['replayId']}", data)


def compare_report(application: App, docs: list[dict[str, Any]]) -> str:
    from streamprov.observe.series import replay_series

    data = {"kind": "compare", "replays": [{"doc": d, "series": replay_series(application, d)}
                                           for d in docs]}
    return self_contained("replays side by side", data)


def tuning_report(application: App, job: dict[str, Any],
                  scaling: list[dict[str, Any]] | None = None) -> str:
    """A tuning job's report: its evaluations and, from its own replay registry
    (``tuning/<id>/replays``), each evaluation replay's CDF and throughput."""
    from streamprov.observe.series import replay_series
    from streamprov.replay.registry import ReplayRegistry

    tune_id = str(job["tuneId"])
    registry = ReplayRegistry(application.settings.data_dir / "tuning" / tune_id / "replays")
    docs = [d for d in registry.list() if d.get("report")]
    docs.sort(key=lambda d: d.get("createdNs", 0))
    cache = application.settings.data_dir / "observe" / "series" / "tuning" / tune_id
    replays = [{"doc": d, "series": replay_series(application, d, cache_dir=cache)}
               for d in docs]
    mine = [e for e in (scaling or []) if str(e.get("trigger", "")) == f"tune {tune_id}"]
    data = {"kind": "tune", "job": job, "replays": replays, "scaling": mine}
    return self_contained(f"tuning job {tune_id}", data)
