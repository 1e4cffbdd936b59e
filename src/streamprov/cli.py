"""The ``streamprov`` command line. Parses, calls the app, prints; no business logic here.

Every error a user can cause ends in one line on stderr and exit code 2; no tracebacks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamprov.adapt.autoscaler import MemoryAutoscaler, MemoryPolicy, PsutilMemorySampler
from streamprov.app import (
    PROVENANCE_URL_ENV,
    STORE_ENV,
    STREAM_LOG_URL_ENV,
    App,
    RunSummary,
    Settings,
    check_window,
)
from streamprov.config import Catalog, ServeSection
from streamprov.errors import InvalidInput, StreamprovError
from streamprov.model import Chain, format_time_ns, parse_time_ns, validate_id
from streamprov.replay import ReplayEngine, ReplayError, ReplayRequest
from streamprov.runtime import JsonLinesSink, JsonLinesSource, Pipeline, load_pipeline
from streamprov.runtime.base import Deployment
from streamprov.store import ChainCursor

app = typer.Typer(
    name="streamprov",
    help="Stream pipelines that record every record's provenance chain and replay any window "
    "of time on other hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_store_url: str | None = None
"""``--store``, given before the command; applies to every store the command opens."""


@app.callback()
def _global_options(
    store: Annotated[str | None, typer.Option(
        "--store", help="Store URL for both the provenance store and the stream log, e.g. "
        "postgresql://user@host:5432/db (env STREAMPROV_STORE; default: DuckDB files in the "
        "data dir).", show_default=False)] = None,
) -> None:
    """Stream pipelines that record every record's provenance chain and replay any window of
    time on other hardware."""
    global _store_url
    _store_url = store


provenance_app = typer.Typer(help="Look up provenance chains: who touched a record, and when.",
                             no_args_is_help=True)
app.add_typer(provenance_app, name="provenance")
scaling_app = typer.Typer(help="The scaling audit trail and deviation triggers.",
                          no_args_is_help=True)
app.add_typer(scaling_app, name="scaling")

# piped output is not cut to 80 columns: tables stay whole for grep and less
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the stores live (env STREAMPROV_DATA_DIR; "
                 "default ./streamprov-data).", show_default=False),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config-file", help="Catalog of configurations (TOML) (default: "
                 "./streamprov.toml if present, else built-in defaults).", show_default=False),
]


ReportOpt = Annotated[
    Path | None,
    typer.Option("--report", help="Also write a self-contained HTML report with plots (latency "
                 "CDF, throughput, ...) to this file.", show_default=False),
]


_opened: list[App] = []
"""Apps built by the running command; ``main`` closes them (their timestamp service) at the end."""


RunnerOpt = Annotated[
    str | None, typer.Option("--runner", help="Where nodes run: 'local' (OS processes) or 'ray' "
                      "(actors on a Ray cluster; needs the ray extra).")]
RayAddressOpt = Annotated[
    str | None, typer.Option("--ray-address", help="With --runner ray: join this cluster "
                             "(host:6379 or ray://host:10001); default: start a local one.",
                             show_default=False)]


def _app(data_dir: Path | None, runner: str | None = None, ray_address: str | None = None,
         config_file: Path | None = None) -> App:
    """The app for this command: flags first, then the environment, then the config file's
    ``[store]`` and ``[runtime]`` sections, then the defaults."""
    from streamprov.config import file_settings

    store, rt = file_settings(config_file)
    runner = runner or rt.runner or "local"
    ray_address = ray_address or rt.ray_address
    if runner not in ("local", "ray"):
        raise InvalidInput(f"--runner must be 'local' or 'ray', not {runner!r}", field="runner")
    if ray_address is not None and runner != "ray":
        raise InvalidInput("--ray-address needs --runner ray", field="ray_address")
    provenance_url: str | None
    stream_log_url: str | None
    if _store_url is not None:
        provenance_url = stream_log_url = _store_url
    else:
        both = os.environ.get(STORE_ENV)
        provenance_url = (os.environ.get(PROVENANCE_URL_ENV) or both or store.provenance_url
                          or store.url)
        stream_log_url = (os.environ.get(STREAM_LOG_URL_ENV) or both or store.stream_log_url
                          or store.url)
    application = App(Settings.resolve(data_dir, runner=runner, ray_address=ray_address,
                                       provenance_url=provenance_url,
                                       stream_log_url=stream_log_url))
    _opened.append(application)
    return application


def _print_json(doc: Any) -> None:
    """One JSON document on its own line (what every ``--json`` prints, NDJSON for lists)."""
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")


def fmt_ns(ns: float) -> str:
    """A duration in the largest unit that keeps it readable."""
    for unit, size in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= size:
            return f"{ns / size:.2f} {unit}"
    return f"{ns:.0f} ns"


def _time(value: str, name: str) -> int:
    return parse_time_ns(value, name)


def _positive(value: int | None, name: str) -> None:
    if value is not None and value <= 0:
        raise InvalidInput(f"--{name} must be a positive number, got {value}", field=name)


def _run_with_progress(application: App, pipeline: Pipeline, total: int | None,
                       stream_id: str | None, label: str,
                       on_start: Callable[[Deployment], Callable[[], None]] | None = None,
                       ) -> RunSummary:
    application.settings.ensure_data_dir()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("records"), TimeElapsedColumn(), console=err, transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)

        def update(done: int) -> None:
            progress.update(task, completed=done)

        return application.run(pipeline, stream_id=stream_id, on_progress=update,
                               on_start=on_start)


def _print_summary(summary: RunSummary, application: App, pipeline: Pipeline) -> None:
    r = summary.result
    oc = summary.outcomes
    shape = " -> ".join(
        [f"source x{pipeline.sources}"]
        + [f"{s.name} x{s.parallelism}" if s.parallelism > 1 else s.name
           for s in pipeline.stages]
    )
    table = Table(title=f"stream [bold]{r.stream_id}[/]: {shape}", show_header=False,
                  title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    total = oc["delivered"] + oc["dropped"] + oc["failed"]  # type: ignore[index]
    balance = "balances" if total == r.ingested else f"MISMATCH: {total} chains"
    table.add_row("records in", f"{r.ingested:,}" + (
        f" ({r.recovered:,} left unfinished by an earlier run, re-driven from the stream log)"
        if r.recovered else ""))
    if r.recoveries:
        dup = ("unknown" if r.duplicated_outputs is None
               else f"{r.duplicated_outputs:,}")
        table.add_row("node crashes", f"{len(r.recoveries)} (restarted in "
                      f"{max(x.duration_s for x in r.recoveries):.2f} s at most; "
                      f"{sum(x.redriven for x in r.recoveries):,} records re-driven; "
                      f"duplicated outputs: {dup})")
    table.add_row("records out", f"{r.delivered:,} delivered, {r.dropped:,} dropped, "
                  f"{r.failed:,} failed ({balance})")
    table.add_row("throughput", f"{r.throughput:,.0f} records/s over {r.duration_s:.2f} s")
    lat = summary.latency
    table.add_row("latency (from chains)", f"p50 {fmt_ns(lat.p50_ns)}, p99 {fmt_ns(lat.p99_ns)},"
                  f" max {fmt_ns(lat.max_ns)} over {lat.count:,} chains")
    table.add_row("provenance", f"{summary.provenance_rows:,} hop rows written "
                  f"for {r.chains_written:,} chains")
    cpu = r.cpu_s_by_role()
    if cpu and r.ingested:
        order = ["source", "ingest", *dict.fromkeys(st.name for st in pipeline.stages), "writer"]
        per = {role: cpu[role] / r.ingested * 1e6 for role in order if role in cpu}
        table.add_row("CPU per record", f"{sum(per.values()):,.1f} µs: "
                      + ", ".join(f"{role} {us:,.1f}" for role, us in per.items()))
    s = application.settings
    table.add_row("stream log", s.stream_log_url)
    table.add_row("provenance store", s.provenance_url)
    out.print(table)


def _print_clocks(application: App, stream_id: str, check_order: bool) -> None:
    """One line on the nodes' clocks, and with skewed sources the order check."""
    doc = application.clock_status()
    nodes = doc.get("nodes", [])
    cfg = application.settings.clock
    if nodes:
        bounds = sorted(n.get("errorNs") or 0 for n in nodes)
        outside = sum(1 for n in nodes if not n.get("withinTolerance", True))
        state = (f"synchronized with {cfg.replica_count} timestamp replicas" if cfg.enabled
                 else "not synchronized")
        out.print(f"[bold]clocks[/]: {len(nodes)} nodes {state}; error bound max "
                  f"{fmt_ns(bounds[-1])} (tolerance {fmt_ns(cfg.max_skew_ns)}), "
                  f"{outside} outside tolerance")
    if check_order:
        order = application.order_check(stream_id)
        out.print(f"[bold]order[/]: by hop-0 stamps vs true generation time, "
                  f"{order.inversions:,} of {order.pairs:,} record pairs inverted, "
                  f"{order.inversions_beyond_bounds:,} beyond the recorded error bounds")


# -- commands ---------------------------------------------------------------------------------
@app.command()
def demo(
    records: Annotated[int, typer.Option(help="Synthetic records to push through.")] = 20_000,
    sources: Annotated[int, typer.Option(help="Independent ingest sources.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic generator.")] = 7,
    replay: Annotated[bool, typer.Option(
        help="End with a replay of the run at two configurations, side by side.")] = True,
    tune: Annotated[bool, typer.Option(
        help="With --replay: then a short tuning run (a few replays) for the cheapest "
        "configuration that meets a latency SLO.")] = True,
    clock_offset: Annotated[str, typer.Option(
        help="Skew the sources' clocks: offsets spread over +/- this (e.g. 5ms).")] = "0",
    clock_drift: Annotated[str, typer.Option(
        help="...and drifts spread over +/- this (e.g. 100ppm).")] = "0",
    clock_sync: Annotated[bool, typer.Option(
        help="Synchronize node clocks with the timestamp service (off: raw clocks).")] = True,
    data_dir: DataDir = None,
    config_file: ConfigFile = None,
) -> None:
    """Run the demo pipeline on embedded stores and show what provenance tells about it."""
    import time

    from streamprov.examples.demo import build

    _positive(records, "records")
    _positive(sources, "sources")
    application = _app(data_dir, config_file=config_file)
    skewed = clock_offset not in ("0", "") or clock_drift not in ("0", "")
    clock = application.settings.clock.replace(enabled=clock_sync)
    if skewed:
        clock = clock.with_spread_simulation([f"demo/source/{k}" for k in range(sources)],
                                             clock_offset, clock_drift)
    application.settings = application.settings.model_copy(update={"clock": clock})
    catalog = _catalog(config_file, application)
    pipeline = build(records=records, sources=sources, seed=seed, true_time=skewed)
    before_ns = time.time_ns()
    summary = _run_with_progress(application, pipeline, records, None, "demo")
    after_ns = time.time_ns()
    _print_summary(summary, application, pipeline)
    _print_clocks(application, "demo", skewed)
    if replay:
        _demo_replays(application, catalog, before_ns, after_ns)
        if tune:
            _demo_tuning(application, catalog, before_ns, after_ns)
    with application.provenance() as store:
        sample = store.window(summary.result.stream_id, 0, 2**63 - 1, limit=1)
    example = sample[0].record_id if sample else 0
    dd = f" --data-dir {data_dir}" if data_dir else ""
    out.print("\n[bold]Try next[/]")
    out.print(f"  streamprov streams{dd}")
    out.print(f"  streamprov provenance show demo {example}{dd}")
    out.print(f"  streamprov provenance query demo --start 0 --end now --limit 5{dd}")
    if replay:
        window = f"--start {format_time_ns(before_ns)} --end {format_time_ns(after_ns)}"
        out.print(f"  streamprov replay demo {window} --config large --speed 2{dd}")
        out.print(f"  streamprov tune demo {window} --p99-ms 200 --budget 8 --sample-s 1{dd}")
        out.print(f"  streamprov scaling events{dd}")
        out.print(f"  streamprov serve{dd}    # dashboard at http://127.0.0.1:8000/ui, "
                  "API docs at /docs")


@app.command()
def run(
    pipeline_ref: Annotated[str, typer.Argument(metavar="PIPELINE",
                                                help="Import path, package.module:name.")],
    records: Annotated[int | None, typer.Option(
        help="Records for a synthetic source (replaces its count).")] = None,
    input_path: Annotated[str | None, typer.Option(
        "--input", help="Read JSON Lines from this file ('-' for stdin) instead of the "
        "pipeline's source.")] = None,
    key_field: Annotated[str | None, typer.Option(
        help="With --input: payload field used as record key.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Write delivered records as JSON Lines to this file (replaces the sink).")] = None,
    stream: Annotated[str | None, typer.Option(
        help="Stream id [default: the pipeline's name].")] = None,
    autoscale: Annotated[str | None, typer.Option(
        metavar="STAGE", help="Scale this stage out and in on its nodes' memory utilization "
        "while the run goes (the memory autoscaler); decisions go to the scaling audit trail "
        "(streamprov scaling events).")] = None,
    node_type: Annotated[str, typer.Option(
        help="With --autoscale: the node type (from the catalog) whose memory a node's "
        "utilization is measured against.")] = "small",
    memory_high: Annotated[float, typer.Option(
        help="With --autoscale: scale out above this fraction of a node's memory.")] = 0.8,
    memory_low: Annotated[float, typer.Option(
        help="With --autoscale: scale in when even the fullest node is below this.")] = 0.3,
    cooldown: Annotated[float, typer.Option(
        help="With --autoscale: seconds between two decisions.")] = 5.0,
    runner: RunnerOpt = None,
    ray_address: RayAddressOpt = None,
    data_dir: DataDir = None,
    config_file: ConfigFile = None,
) -> None:
    """Run a user pipeline, given by import path, until its source ends."""
    from dataclasses import replace

    from streamprov.runtime import SyntheticSource

    _positive(records, "records")
    if stream is not None:
        validate_id(stream, "stream")
    pipeline = load_pipeline(pipeline_ref)
    total: int | None = None
    if input_path is not None:
        pipeline = pipeline.with_source(JsonLinesSource(input_path, key_field), sources=1)
    elif records is not None:
        if not isinstance(pipeline.source, SyntheticSource):
            raise InvalidInput("--records applies to synthetic sources; use --input for files",
                               field="records")
        pipeline = pipeline.with_source(replace(pipeline.source, records=records))
    if isinstance(pipeline.source, SyntheticSource):
        total = pipeline.source.records
    if output is not None:
        pipeline = pipeline.with_sink(JsonLinesSink(output))
    application = _app(data_dir, runner, ray_address, config_file)
    scaler = (_memory_autoscaler(application, pipeline, stream or pipeline.name, autoscale,
                                 node_type, memory_high, memory_low, cooldown, config_file)
              if autoscale is not None else None)
    summary = _run_with_progress(application, pipeline, total, stream, pipeline.name,
                                 on_start=scaler.attach if scaler is not None else None)
    _print_summary(summary, application, pipeline)
    if scaler is not None:
        scaler.print_decisions()


class _RunAutoscaler:
    """``run --autoscale``: the memory autoscaler on one stage of the run's deployment."""

    def __init__(self, stage: str, memory_bytes: int, policy: MemoryPolicy,
                 record: Callable[[dict[str, Any]], Any]) -> None:
        self.stage = stage
        self.memory_bytes = memory_bytes
        self.policy = policy
        self.record = record
        self.scaler: MemoryAutoscaler | None = None
        self.error: BaseException | None = None

    def attach(self, deployment: Deployment) -> Callable[[], None]:
        self.scaler = MemoryAutoscaler(
            deployment, PsutilMemorySampler(deployment.pids), self.stage, self.memory_bytes,
            self.policy, record=self.record).start(interval_s=0.25, on_error=self._failed)
        return self.scaler.stop

    def _failed(self, exc: BaseException) -> None:
        self.error = exc

    def print_decisions(self) -> None:
        decisions = self.scaler.decisions if self.scaler is not None else []
        if not decisions:
            out.print(f"[bold]memory autoscaler[/] on {self.stage}: no decision (utilization "
                      f"stayed between {self.policy.low:.0%} and {self.policy.high:.0%}, or "
                      "not for long enough)")
        for d in decisions:
            out.print(f"[bold]memory autoscaler[/] on {d['stage']}: {d['from']} -> {d['to']} "
                      f"nodes ({d['reason']})")
        if self.error is not None:
            err.print(f"memory autoscaler stopped early: {self.error}")


def _memory_autoscaler(application: App, pipeline: Pipeline, stream_id: str, stage: str,
                       node_type: str, high: float, low: float, cooldown_s: float,
                       config_file: Path | None) -> _RunAutoscaler:
    """Check ``run --autoscale``'s options before anything runs."""
    from streamprov.app import adaptation_service

    st = pipeline.stage(stage)
    if st.sink is not None and not st.sink.parallel_safe:
        raise InvalidInput(f"stage {stage!r} writes one output and cannot scale out",
                           field="autoscale")
    catalog = _catalog(config_file, application)
    memory = catalog.node_type(node_type, "node-type").memory_bytes
    if cooldown_s < 0:
        raise InvalidInput("--cooldown must not be negative", field="cooldown")
    policy = MemoryPolicy(high=high, low=low, cooldown_s=cooldown_s, sustain=3,
                          max_nodes=pipeline.max_parallelism)
    adaptation = adaptation_service(application, catalog)
    return _RunAutoscaler(stage, memory, policy,
                          lambda d: adaptation.record_scaling(stream_id, d))


@app.command()
def streams(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """List streams with their record counts and first/last hop-0 times."""
    application = _app(data_dir)
    with application.provenance() as store:
        summaries = store.streams()
    with application.stream_log() as log:
        counts = {s.stream_id: log.count(s.stream_id) for s in summaries}
    if as_json:
        for s in summaries:
            _print_json({
                "streamId": s.stream_id, "records": counts[s.stream_id], "chains": s.chains,
                "firstNs": s.first_ns, "lastNs": s.last_ns,
            })
        return
    if not summaries:
        out.print(f"no streams in {application.settings.data_dir}; try: streamprov demo")
        return
    table = Table("stream", "records", "chains", "first hop 0", "last hop 0")
    for s in summaries:
        table.add_row(s.stream_id, f"{counts[s.stream_id]:,}", f"{s.chains:,}",
                      format_time_ns(s.first_ns) if s.first_ns is not None else "-",
                      format_time_ns(s.last_ns) if s.last_ns is not None else "-")
    out.print(table)


def _print_chain(chain: Chain) -> None:
    title = f"stream {chain.stream_id} record {chain.record_id}"
    if chain.branch:
        title += f" branch {chain.branch}"
    table = Table("hop", "node", "timestamp", "since hop 0", "since previous", "logical",
                  "error bound", title=f"{title}: [bold]{chain.outcome.value}[/]",
                  title_justify="left")
    t0 = chain.hops[0].timestamp_ns
    prev = t0
    for i, hop in enumerate(chain.hops):
        table.add_row(str(i), hop.node_id, format_time_ns(hop.timestamp_ns),
                      fmt_ns(hop.timestamp_ns - t0), fmt_ns(hop.timestamp_ns - prev),
                      str(hop.logical), fmt_ns(hop.error_ns) if hop.error_ns else "-")
        prev = hop.timestamp_ns
    out.print(table)
    if chain.error:
        out.print(f"[red]error:[/] {chain.error}")


@provenance_app.command("show")
def provenance_show(
    stream: Annotated[str, typer.Argument(help="Stream id.")],
    record: Annotated[int, typer.Argument(help="Record id.")],
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """One record's provenance chain (one per branch) and how its path ended."""
    chains = _app(data_dir).record_chains(stream, record)
    for chain in chains:
        if as_json:
            _print_json(chain.to_json())
        else:
            _print_chain(chain)


def _time_or_now(value: str, name: str) -> int:
    if value == "now":
        import time

        return time.time_ns()
    return _time(value, name)


@provenance_app.command("query")
def provenance_query(
    stream: Annotated[str, typer.Argument(help="Stream id.")],
    start: Annotated[str, typer.Option(help="Window start, inclusive: int ns or RFC 3339.")],
    end: Annotated[str, typer.Option(help="Window end, exclusive: int ns, RFC 3339 or 'now'.")],
    limit: Annotated[int | None, typer.Option(help="At most this many chains.")] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Chains whose hop 0 lies in [start, end), in the stream's original order."""
    start_ns = _time_or_now(start, "start")
    end_ns = _time_or_now(end, "end")
    check_window(start_ns, end_ns)
    _positive(limit, "limit")
    application = _app(data_dir)
    with application.provenance() as store:
        application.require_stream(store, stream)
        shown = 0
        table = Table("record", "outcome", "hops", "hop 0", "latency", "path")
        cursor: ChainCursor | None = None
        while limit is None or shown < limit:
            page = store.window(stream, start_ns, end_ns, after=cursor,
                                limit=min(1000, limit - shown) if limit else 1000)
            if not page:
                break
            for chain in page:
                if as_json:
                    _print_json(chain.to_json())
                else:
                    table.add_row(str(chain.record_id), chain.outcome.value,
                                  str(len(chain.hops)), format_time_ns(chain.origin_ns),
                                  fmt_ns(chain.latency_ns),
                                  " > ".join(h.node_id.split("/", 1)[-1] for h in chain.hops))
            shown += len(page)
            cursor = ChainCursor.after(page[-1])
            if not as_json and shown >= 1000 and limit is None:
                break
    if not as_json:
        out.print(table)
        out.print(f"{shown:,} chains" + (" (first 1,000; use --limit or --json for more)"
                                        if limit is None and shown >= 1000 else ""))


@provenance_app.command("export")
def provenance_export(
    stream: Annotated[str, typer.Argument(help="Stream id.")],
    start: Annotated[str, typer.Option(help="Window start, inclusive: int ns or RFC 3339.")],
    end: Annotated[str, typer.Option(help="Window end, exclusive: int ns, RFC 3339 or 'now'.")],
    otlp: Annotated[str | None, typer.Option(
        help="OTLP/HTTP endpoint of a collector (http://host:4318 or its /v1/traces URL).")
    ] = None,
    file: Annotated[Path | None, typer.Option(
        help="Write OTLP/JSON (one ExportTraceServiceRequest per line) to this file.")] = None,
    replay_id: Annotated[str | None, typer.Option(
        "--replay-id", help="Export this replay's chains instead of the original ones.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Export the window's chains as OpenTelemetry traces: one trace per record, one span per
    hop (node id as resource, clock error bound and logical counter as span attributes)."""
    from streamprov.observe.traces import JsonFileSpanExporter, export_window, otlp_exporter

    if (otlp is None) == (file is None):
        raise InvalidInput("give exactly one of --otlp URL and --file PATH", field="otlp")
    start_ns = _time_or_now(start, "start")
    end_ns = _time_or_now(end, "end")
    check_window(start_ns, end_ns)
    validate_id(stream, "stream")
    if replay_id:
        validate_id(replay_id, "replay-id")
    application = _app(data_dir)
    if otlp is not None:
        exporter = otlp_exporter(otlp)
    else:
        assert file is not None  # exactly one of the two (checked above)
        exporter = JsonFileSpanExporter(file)
    try:
        summary = export_window(application, stream, start_ns, end_ns, exporter,
                                replay_id=replay_id or "")
    finally:
        exporter.shutdown()
    out.print(f"exported {summary.spans:,} spans of {summary.traces:,} traces "
              f"({summary.chains:,} chains) to {otlp or file}")


# -- replay ------------------------------------------------------------------------------------
DEMO_CONFIGS = ("small", "medium")
_FINISHED = ("completed", "failed", "cancelled")
DEMO_WINDOW_NS = 2_000_000_000


def _catalog(config_file: Path | None, application: App) -> Catalog:
    return Catalog.load(config_file, application.settings.data_dir)


def _replay_with_progress(engine: ReplayEngine, request: ReplayRequest,
                          label: str) -> dict[str, Any]:
    doc = engine.submit(request)  # bad input fails here, before any output
    rid = doc["replayId"]
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("records"), TextColumn("{task.fields[phase]}"), TimeElapsedColumn(),
        console=err, transient=True,
    ) as progress:
        task = progress.add_task(label, total=None, phase="queued")
        try:
            while (doc := engine.wait(rid, 0.1))["state"] not in _FINISHED:
                p = doc["progress"]
                progress.update(task, total=p.get("recordsTotal"),
                                completed=p.get("recordsInjected") or 0,
                                phase=p.get("phase", ""))
        except KeyboardInterrupt:
            engine.cancel(rid)
            engine.wait(rid, 120)
            raise
    if doc["state"] == "failed":
        e = doc.get("error") or {}
        raise ReplayError(f"replay {doc['replayId']} failed: {e.get('message')}",
                          field=e.get("field"))
    return doc


def _lat(summary: dict[str, Any]) -> str:
    if not summary or not summary.get("count"):
        return "-"
    return (f"p50 {fmt_ns(summary['p50'])}, p95 {fmt_ns(summary['p95'])}, "
            f"p99 {fmt_ns(summary['p99'])}, max {fmt_ns(summary['max'])}")


def _report_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    def rate(x: float | None) -> str:
        return f"{x:,.0f}/s" if x else "-"

    rows = [
        ("records", f"{r['records']:,}"),
        ("duration", f"{r['durationS']:.3f} s (target {r.get('targetDurationS', 0):.3f} s)"),
        ("throughput", f"{rate(r['achievedThroughput'])} of {rate(r['targetThroughput'])}"),
        ("latency", _lat(r["latencyNs"])),
    ]
    rows += [(f"  hop {stage}", _lat(h)) for stage, h in r["perHopLatencyNs"].items()]
    lag = r["pacingLagNs"]
    rows.append(("pacing lag", (_lat(lag) + ("" if r.get("keptUp", True)
                                              else "  [red]fell behind[/]"))))
    stage_nodes = [n for n in r["nodes"] if n.get("kind") == "stage"]
    if stage_nodes:
        cpu = sum(n.get("cpuPercentMean", 0.0) for n in stage_nodes)
        rss = max(n.get("rssBytesMax", 0) for n in stage_nodes)
        util = max(n.get("memoryUtilization", 0.0) for n in stage_nodes)
        rows.append(("nodes", f"{len(stage_nodes)} stage processes, CPU {cpu:.0f}% in all, "
                     f"peak RSS {rss / 2**20:.0f} MiB ({util:.1%} of the node type)"))
    rows.append(("provisioning", f"{r.get('provisioningS', 0):.2f} s, "
                 f"{len(r['scalingSteps'])} scaling steps"))
    rows.append(("errors", str(r["errors"])))
    rows.append(("fidelity", f"{r['fidelity']}" + (
        "" if r.get("orderPreserved") is None
        else f", order {'preserved' if r['orderPreserved'] else 'CHANGED'}")))
    if r.get("costEstimate") is not None:
        rows.append(("cost estimate", f"{r['costEstimate']:.6f}"))
    rows += [("note", m) for m in r.get("messages", [])]
    if r.get("message"):
        rows.append(("note", r["message"]))
    return rows


def _print_report(doc: dict[str, Any]) -> None:
    r = doc["report"]
    req = doc["request"]
    table = Table(title=f"replay [bold]{doc['replayId']}[/] of {req['streamId']} "
                  f"[{req['startTime']}, {req['endTime']}) on {r['configurationId']} at "
                  f"{req['replaySpeed']:g}x: [bold]{doc['state']}[/]", show_header=False,
                  title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for k, v in _report_rows(r):
        table.add_row(k, v)
    out.print(table)


def _print_comparison(docs: list[dict[str, Any]]) -> None:
    table = Table("", *[f"{d['report']['configurationId']}" for d in docs],
                  title="side by side", title_justify="left")
    rows = [_report_rows(d["report"]) for d in docs]
    labels = [k for k, _ in rows[0] if k not in ("note",)]
    for label in labels:
        values = [next((v for k, v in r if k == label), "-") for r in rows]
        table.add_row(label, *values)
    out.print(table)


def _demo_replays(application: App, catalog: Catalog, start_ns: int, end_ns: int) -> None:
    from streamprov.app import replay_engine

    with application.provenance() as store:
        first = store.window("demo", start_ns, end_ns, limit=1)
    if not first:
        return
    w_start = first[0].origin_ns
    w_end = min(end_ns, w_start + DEMO_WINDOW_NS)
    engine = replay_engine(application, catalog)
    out.print(f"\n[bold]Replay[/] of the run's first {(w_end - w_start) / 1e9:.1f} s at two "
              f"configurations ({' and '.join(DEMO_CONFIGS)}), real time:")
    docs = []
    for cid in DEMO_CONFIGS:
        req = ReplayRequest.parse("demo", w_start, w_end, cid, 1.0)
        docs.append(_replay_with_progress(engine, req, f"replay on {cid}"))
    _print_comparison(docs)


@app.command("replay")
def replay_command(
    stream: Annotated[str, typer.Argument(help="Stream id.")],
    start: Annotated[str, typer.Option(help="Window start, inclusive: int ns or RFC 3339.")],
    end: Annotated[str, typer.Option(help="Window end, exclusive: int ns, RFC 3339 or 'now'.")],
    config: Annotated[str, typer.Option("--config", help="Configuration id of the catalog.")],
    speed: Annotated[str, typer.Option(help="Multiple of the original pace (1 = real "
                                       "time).")] = "1.0",
    runner: RunnerOpt = None,
    ray_address: RayAddressOpt = None,
    report: ReportOpt = None,
    data_dir: DataDir = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay a window of a stream on a configuration and report how it did."""
    from streamprov.app import replay_engine
    from streamprov.observe.report import check_report_path

    if report is not None:
        check_report_path(report)

    start_ns = _time_or_now(start, "start")
    end_ns = _time_or_now(end, "end")
    try:
        request = ReplayRequest.parse(stream, start_ns, end_ns, config, speed)
    except InvalidInput as exc:
        names = {"startTime": "start", "endTime": "end", "replaySpeed": "speed",
                 "configurationId": "config", "streamId": "stream"}
        exc.field = names.get(exc.field or "", exc.field)
        exc.message = exc.message.replace("startTime", "--start").replace(
            "endTime", "--end").replace("replaySpeed", "--speed")
        raise
    application = _app(data_dir, runner, ray_address, config_file)
    catalog = _catalog(config_file, application)
    engine = replay_engine(application, catalog)
    doc = _replay_with_progress(engine, request, f"replay {stream}")
    from streamprov.app import adaptation_service

    # the deviation trigger: compare with what this configuration delivered before
    event = adaptation_service(application, catalog).after_replay(doc)
    if report is not None:
        from streamprov.observe.report import replay_report, write_report

        write_report(report, replay_report(application, doc))
    if as_json:
        _print_json(doc)
    else:
        _print_report(doc)
        if report is not None:
            out.print(f"report: {report}")
        if event is not None:
            out.print(f"[yellow]deviation[/] from the expected: {'; '.join(event['reasons'])}"
                      " (streamprov scaling triggers)")


@app.command()
def serve(
    host: Annotated[str, typer.Option(
        help="Address to listen on. Anything but a loopback address needs an API token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    auto_tune: Annotated[bool, typer.Option(
        help="A replay that strays from what its configuration delivered before starts a "
        "tuning job of its window, applied when done.")] = False,
    api_token_file: Annotated[Path | None, typer.Option(
        "--api-token-file", help="File holding the API token that requests which change "
        "something must send as 'Authorization: Bearer <token>' (else env "
        "STREAMPROV_API_TOKEN, else [serve] api_token_file).", show_default=False)] = None,
    protect_reads: Annotated[bool, typer.Option(
        "--protect-reads", help="Reads need the API token too (/healthz stays open; the "
        "dashboard then needs a client that sends the token).")] = False,
    runner: RunnerOpt = None,
    ray_address: RayAddressOpt = None,
    data_dir: DataDir = None,
    config_file: ConfigFile = None,
) -> None:
    """Run the HTTP API (replays, provenance, configurations); OpenAPI at /openapi.json."""
    import uvicorn

    from streamprov.api import create_app
    from streamprov.app import adaptation_service, replay_engine, tuning_service

    if not 0 < port < 65536:
        raise InvalidInput(f"--port must be 1..65535, got {port}", field="port")
    application = _app(data_dir, runner, ray_address, config_file)
    catalog = _catalog(config_file, application)
    serve_section, token = _serve_access(catalog, host, api_token_file, protect_reads)
    application.clock_factory()  # the timestamp service runs alongside the API
    application.settings.ensure_data_dir()
    for stream_id, ref in catalog.serve.pipelines.items():
        application.remember_pipeline(stream_id, load_pipeline(ref))
    adaptation = adaptation_service(application, catalog)
    api = create_app(application, catalog, replay_engine(application, catalog),
                     adaptation=adaptation,
                     tuning=tuning_service(application, catalog, adaptation),
                     auto_tune=auto_tune, serve=serve_section, api_token=token)
    access = ("open to anyone who can reach it" if token is None else
              "reads and writes need the API token" if serve_section.protect_reads else
              "changes need the API token")
    err.print(f"streamprov API on http://{host}:{port} (data dir "
              f"{application.settings.data_dir}; {access}); docs at /docs")
    uvicorn.run(api, host=host, port=port, log_level="warning")


def _serve_access(catalog: Catalog, host: str, token_file: Path | None,
                  protect_reads: bool) -> tuple[ServeSection, str | None]:
    """The ``[serve]`` section with the flags applied, and the API token (None: none given).
    Refuses a non-loopback ``host`` without a token: the API would be open to the network."""
    from streamprov.api.auth import TOKEN_ENV, is_loopback, resolve_token

    section = catalog.serve
    if protect_reads:
        section = section.model_copy(update={"protect_reads": True})
    config_dir = Path(catalog.source).parent if catalog.source != "defaults" else None
    token = resolve_token(token_file, section.api_token_file, config_dir)
    if token is None and not is_loopback(host):
        raise InvalidInput(
            f"--host {host} is not a loopback address: give an API token (--api-token-file "
            f"PATH, ${TOKEN_ENV} or [serve] api_token_file) or listen on 127.0.0.1",
            field="host")
    if token is None and section.protect_reads:
        raise InvalidInput(f"--protect-reads needs an API token (--api-token-file PATH, "
                           f"${TOKEN_ENV} or [serve] api_token_file)", field="protect-reads")
    return section, token


# -- clock ------------------------------------------------------------------------------------
clock_app = typer.Typer(help="Clock synchronization: the timestamp service and node clocks.",
                        no_args_is_help=True)
app.add_typer(clock_app, name="clock")


@clock_app.command("status")
def clock_status(
    data_dir: DataDir = None,
    probe: Annotated[list[str] | None, typer.Option(
        help="Also query a timestamp service replica at HOST:PORT (repeatable).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Each node's clock in the last run (replica, offset, error bound, drift, tolerance)."""
    from streamprov.clock.config import ClockConfig
    from streamprov.clock.service import probe_replicas

    application = _app(data_dir)
    doc = application.clock_status()
    if probe:
        cfg = ClockConfig.build(replica_addresses=tuple(probe))
        doc["probes"] = [
            {"address": p.address, "reachable": p.reachable, "stratum": p.stratum,
             "offsetNs": p.offset_ns, "delayNs": p.delay_ns, "rootDistanceNs": p.root_distance_ns,
             "error": p.error}
            for p in probe_replicas(cfg)
        ]
    if as_json:
        _print_json(doc)
        return
    nodes = doc.get("nodes", [])
    if not nodes:
        out.print(f"no run has recorded clocks in {application.settings.data_dir}; "
                  "try: streamprov demo")
    else:
        table = Table("node", "replica", "offset", "error bound", "drift", "last sync",
                      "within tolerance", "violations",
                      title=f"clocks at the end of the last run of stream {doc.get('streamId')}"
                      f" (tolerance {fmt_ns(doc['maxSkewNs'])}, policy {doc['policy']})",
                      title_justify="left")
        for n in nodes:
            table.add_row(
                n["nodeId"], str(n.get("replicaAddress") or "-"),
                fmt_ns(n["offsetNs"]) if n.get("offsetNs") is not None else "-",
                fmt_ns(n["errorNs"]) if n.get("errorNs") else "-",
                f"{n['driftPpm']:+.2f} ppm" if n.get("driftPpm") is not None else "-",
                format_time_ns(n["lastSyncNs"]) if n.get("lastSyncNs") else "never",
                "yes" if n.get("withinTolerance") else "[red]no[/]", str(n.get("violations", 0)))
        out.print(table)
    for p in doc.get("probes", []):
        state = (f"stratum {p['stratum']}, offset {fmt_ns(p['offsetNs'])}, delay "
                 f"{fmt_ns(p['delayNs'])}" if p["reachable"] else f"unreachable: {p['error']}")
        out.print(f"replica {p['address']}: {state}")


@clock_app.command("serve")
def clock_serve(
    port: Annotated[int, typer.Option(help="UDP port of the first replica.")] = 12300,
    replicas: Annotated[int, typer.Option(help="Replicas, on ports PORT..PORT+N-1.")] = 3,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    upstream: Annotated[list[str] | None, typer.Option(
        help="Upstream NTP server HOST[:PORT] the replicas follow (repeatable).")] = None,
) -> None:
    """Run the timestamp service (NTPv4 replicas) for nodes on other machines."""
    from streamprov.clock.config import ClockConfig
    from streamprov.clock.service import TimestampService

    cfg = ClockConfig.build(base_port=port, replicas=replicas, host=host,
                            upstream=tuple(upstream or ()))
    service = TimestampService(cfg)
    service.start()
    addrs = ", ".join(f"{h}:{p}" for h, p in service.addresses)
    out.print(f"timestamp service: {cfg.replica_count} NTPv4 replicas on {addrs}; Ctrl-C stops")
    service.serve_forever()


def _dispatch(argv: list[str] | None) -> Any:
    try:
        return app(args=argv, prog_name="streamprov", standalone_mode=False)
    finally:
        while _opened:
            _opened.pop().close()


# -- adaptation --------------------------------------------------------------------------------
DEMO_TUNE_BUDGET = 3
DEMO_TUNE_SAMPLE_S = 0.5
DEMO_TUNE_P99_MS = 500.0


def _ints(value: str | None, name: str, sep: str = ",") -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(sep) if x.strip()]
    except ValueError:
        raise InvalidInput(f"--{name}: give integers separated by '{sep}', got {value!r}",
                           field=name) from None


def _evaluation_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table("#", "configuration", "cost/h", "p99 latency", "throughput", "kept up",
                  "SLO", title=title, title_justify="left")
    best = min((r for r in rows if r["sloMet"]), key=lambda r: r["cost"], default=None)
    for r in rows:
        c = r["configuration"]
        mark = "[green]met[/]" if r["sloMet"] else "[red]missed[/]"
        star = " [bold]*[/]" if r is best else ""
        table.add_row(str(r["index"]), f"{c['nodes']} x {c['nodeType']}, batch "
                      f"{c['batchSize']}{star}", f"{r['cost']:.3f}",
                      fmt_ns(r["p99LatencyNs"]) if r["p99LatencyNs"] < 2**62 else "-",
                      f"{r['throughput']:,.0f}/s", "yes" if r["keptUp"] else "no", mark)
    return table


def _tune_outcome(doc: dict[str, Any]) -> None:
    best = doc.get("best")
    if doc["state"] != "completed":
        e = doc.get("error") or {}
        raise ReplayError(f"tuning job {doc['tuneId']} {doc['state']}: {e.get('message')}",
                          field=e.get("field"))
    if best is None:
        out.print(f"[yellow]{doc.get('message') or 'no configuration met the SLO'}[/]")
        return
    c = best["configuration"]
    line = (f"best: [bold]{c['nodes']} x {c['nodeType']}, batch {c['batchSize']}[/] at "
            f"{best['cost']:.3f}/h, p99 {fmt_ns(best['p99LatencyNs'])}")
    imp = doc.get("improvement")
    if imp and imp.get("costReduction") is not None:
        start = doc["start"]["configuration"]
        line += (f"; {imp['costReduction']:.0%} cheaper than the start ({start['nodes']} x "
                 f"{start['nodeType']}, batch {start['batchSize']}, "
                 f"{imp['startCost']:.3f}/h"
                 + ("" if imp.get("startMetSlo") else ", which missed the SLO") + ")")
    out.print(line)
    for a in doc.get("applied") or []:
        out.print(f"applied: {a['applied']} ({a.get('note') or a.get('stage')})")


def _run_tuning(application: App, catalog: Catalog, request: Any, title: str
                ) -> dict[str, Any]:
    from rich.live import Live

    from streamprov.app import adaptation_service, tuning_service

    adaptation = adaptation_service(application, catalog)
    service = tuning_service(application, catalog, adaptation)
    rows: list[dict[str, Any]] = []
    with Live(_evaluation_table(rows, title), console=out, refresh_per_second=4,
              transient=False) as live:
        def on_evaluation(entry: dict[str, Any]) -> None:
            rows.append(entry)
            live.update(_evaluation_table(rows, title))

        doc = service.run(request, on_evaluation=on_evaluation)
    out.print()
    return doc


def _demo_tuning(application: App, catalog: Catalog, start_ns: int, end_ns: int) -> None:
    from streamprov.adapt.tuning import TuneRequest

    request = TuneRequest.parse(
        stream_id="demo", start=start_ns, end=end_ns, p99_latency_ms=DEMO_TUNE_P99_MS,
        algorithm="hill-climb", budget=DEMO_TUNE_BUDGET, sample_s=DEMO_TUNE_SAMPLE_S,
        configuration_id="medium", nodes=[1, 2], node_types=["small", "medium"],
        batch_sizes=[256, 1024])
    out.print(f"\n[bold]Tuning[/]: the cheapest configuration with p99 <= "
              f"{DEMO_TUNE_P99_MS:g} ms that keeps up, by hill climbing from 'medium' "
              f"({DEMO_TUNE_BUDGET} replays of {DEMO_TUNE_SAMPLE_S:g} s):")
    doc = _run_tuning(application, catalog, request, "evaluations")
    _tune_outcome(doc)


@app.command("tune")
def tune_command(
    stream: Annotated[str, typer.Argument(help="Stream id.")],
    start: Annotated[str, typer.Option(help="Window start, inclusive: int ns or RFC 3339.")],
    end: Annotated[str, typer.Option(help="Window end, exclusive: int ns, RFC 3339 or 'now'.")],
    p99_ms: Annotated[float, typer.Option("--p99-ms", help="SLO: p99 latency bound, ms.")],
    algorithm: Annotated[str, typer.Option(
        help="hill-climb, genetic or grid.")] = "hill-climb",
    budget: Annotated[int, typer.Option(help="Configurations to replay at most.")] = 12,
    max_error_rate: Annotated[float, typer.Option(help="SLO: failed / records bound.")] = 0.0,
    keep_up: Annotated[bool, typer.Option(
        help="SLO: the replay must keep up with its speed.")] = True,
    sample_s: Annotated[float | None, typer.Option(
        "--sample-s", help="Replay only the window's first seconds.")] = None,
    speed: Annotated[str, typer.Option(help="Speed of every replay (1 = real time).")] = "1.0",
    start_config: Annotated[str | None, typer.Option(
        "--config", help="Starting configuration [default: medium].")] = None,
    nodes: Annotated[str | None, typer.Option(help="Node range per stage, MIN-MAX.")] = None,
    node_types: Annotated[str | None, typer.Option(
        help="Node types, comma-separated [default: all].")] = None,
    batch_sizes: Annotated[str | None, typer.Option(
        help="Batch sizes, comma-separated [default: the catalog's].")] = None,
    repeats: Annotated[int, typer.Option(help="Extra replays of a result near a bound.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the randomized searches.")] = 0,
    apply: Annotated[bool, typer.Option(help="Apply the best configuration.")] = False,
    report: ReportOpt = None,
    data_dir: DataDir = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Search for the cheapest configuration that meets an SLO, by replaying the window."""
    from streamprov.adapt.tuning import TuneRequest
    from streamprov.observe.report import check_report_path

    if report is not None:
        check_report_path(report)

    names = {"startTime": "start", "endTime": "end", "replaySpeed": "speed",
             "configurationId": "config", "streamId": "stream", "sampleS": "sample-s",
             "slo.p99LatencyMs": "p99-ms", "nodeTypes": "node-types",
             "batchSizes": "batch-sizes"}
    try:
        request = TuneRequest.parse(
            stream_id=stream, start=_time_or_now(start, "start"),
            end=_time_or_now(end, "end"), p99_latency_ms=p99_ms,
            max_error_rate=max_error_rate, keep_up=keep_up, algorithm=algorithm,
            budget=budget,
            apply=apply, sample_s=sample_s, speed=speed, configuration_id=start_config,
            nodes=_ints(nodes, "nodes", "-"),
            node_types=[t for t in node_types.split(",") if t] if node_types else None,
            batch_sizes=_ints(batch_sizes, "batch-sizes"), repeats=repeats, seed=seed)
    except InvalidInput as exc:
        exc.field = names.get(exc.field or "", exc.field)
        raise
    application = _app(data_dir, config_file=config_file)
    catalog = _catalog(config_file, application)
    if as_json:
        from streamprov.app import tuning_service

        doc = tuning_service(application, catalog).run(request)
        _write_tuning_report(application, catalog, doc, report)
        _print_json(doc)
        return
    doc = _run_tuning(application, catalog, request,
                      f"tuning {stream} by {algorithm}, budget {budget}")
    if _write_tuning_report(application, catalog, doc, report):
        out.print(f"report: {report}")
    _tune_outcome(doc)


def _write_tuning_report(application: App, catalog: Catalog, doc: dict[str, Any],
                         report: Path | None) -> bool:
    if report is None:
        return False
    from streamprov.app import adaptation_service
    from streamprov.observe.report import tuning_report, write_report

    events = adaptation_service(application, catalog).scaling_events(doc["request"]["streamId"])
    write_report(report, tuning_report(application, doc, events))
    return True


def _events_table(events: list[dict[str, Any]]) -> Table:
    table = Table("time", "stream", "stage", "from", "to", "trigger", "applied", "why",
                  title="scaling decisions, newest first", title_justify="left")

    def cfg(x: Any) -> str:
        if isinstance(x, dict):
            return f"{x.get('nodes')} x {x.get('nodeType')}, batch {x.get('batchSize')}"
        return "-" if x is None else str(x)

    for e in events:
        table.add_row(e["time"], e.get("streamId", "-"), e.get("stage") or "all",
                      cfg(e.get("from")), cfg(e.get("to")), str(e.get("trigger")),
                      str(e.get("applied", "-")), e.get("reason") or e.get("note") or "")
    return table


@scaling_app.command("events")
def scaling_events_command(
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    limit: Annotated[int, typer.Option(help="Newest events to show.")] = 100,
    data_dir: DataDir = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Every scaling decision: time, from, to, trigger (memory, tune <id>) and figures."""
    from streamprov.app import adaptation_service

    application = _app(data_dir, config_file=config_file)
    adaptation = adaptation_service(application, _catalog(config_file, application))
    events = adaptation.scaling_events(stream, limit)
    if as_json:
        for e in events:
            _print_json(e)
        return
    if not events:
        out.print("no scaling decisions yet; try: streamprov tune ... --apply")
        return
    out.print(_events_table(events))


@scaling_app.command("triggers")
def scaling_triggers_command(
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    limit: Annotated[int, typer.Option(help="Newest triggers to show.")] = 100,
    data_dir: DataDir = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Deviation triggers: replays (or live windows) that strayed from the expectation."""
    from streamprov.app import adaptation_service, replay_engine

    application = _app(data_dir, config_file=config_file)
    catalog = _catalog(config_file, application)
    adaptation = adaptation_service(application, catalog)
    adaptation.sync_replays(replay_engine(application, catalog).history)
    events = adaptation.trigger_events(stream, limit)
    if as_json:
        for e in events:
            _print_json(e)
        return
    if not events:
        out.print("no deviation triggers yet")
        return
    table = Table("time", "stream", "configuration", "source", "reasons",
                  title="deviation triggers, newest first", title_justify="left")
    for e in events:
        table.add_row(e["time"], e["streamId"], e["configurationId"], e["source"],
                      "; ".join(e["reasons"]))
    out.print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point: map every expected error to one line and exit code 2."""
    try:
        code: Any = _dispatch(argv)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("streamprov: aborted\n")
        code = 130
    except KeyboardInterrupt:
        sys.stderr.write("streamprov: interrupted\n")
        code = 130
    except StreamprovError as exc:
        sys.stderr.write(f"streamprov: error: {' '.join(str(exc).split())}\n")
        code = 2
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
