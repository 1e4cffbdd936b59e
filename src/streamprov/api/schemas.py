"""Request and response bodies of the HTTP API (camelCase on the wire), documented for
OpenAPI. Times are int nanoseconds since the epoch or RFC 3339 with up to 9 fractional digits.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from streamprov.replay.request import MAX_SPEED, OutputSink, ReplayState

TimeValue = int | str


class Body(BaseModel):
    """A request body. Strict: ``true`` is not a count and ``"5"`` is not a number (422)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              extra="forbid", strict=True)


class Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              extra="allow")


class ErrorDetail(Out):
    type: str = Field(description="Kind of error (InvalidInput, NotFound, ...).")
    field: str | None = Field(description="The request field that was wrong, when one was.")
    message: str = Field(description="What went wrong and how to fix it, in one line.")


class ErrorBody(Out):
    """Every 4xx/5xx answer has this body."""

    error: ErrorDetail


class Health(Out):
    status: str = Field(description="`ok` when the API can serve requests.")
    data_dir: str
    stores_busy: str | None = Field(
        None, description="What holds the embedded stores right now (a replay), if anything.")


class ClockInfo(Out):
    max_skew_ns: int = Field(description="Tolerance on a node's clock error bound, ns.")
    policy: str = Field(description="`flag` (stamp and record) or `hold` (stop taking records).")
    nodes: list[dict[str, Any]] = Field(
        description="Each node's clock at the end of the last run: nodeId, replica, offsetNs, "
        "errorNs, driftPpm, lastSyncNs, withinTolerance, violations, ...")
    replicas: list[dict[str, Any]] = Field(
        description="The timestamp service's replicas served alongside the API: index, address, "
        "role, stratum, offsetNs, errorNs, driftPpm, lastSyncNs.")
    stream_id: str | None = Field(None, description="Stream of the last run.")


class StreamInfo(Out):
    stream_id: str
    records: int = Field(description="Records in the stream log.")
    chains: int = Field(description="Original (not replayed) chains in the provenance store.")
    first_ns: int | None = Field(description="Earliest hop-0 time, ns since the epoch.")
    last_ns: int | None = Field(description="Latest hop-0 time, ns since the epoch.")


class HopOut(Out):
    node_id: str = Field(description="`<pipeline>/<stage>/<slot>` (`~replay` for replays).")
    timestamp: int = Field(description="HLC timestamp, ns since the epoch.")
    logical: int = Field(0, description="HLC logical counter.")
    error_ns: int = Field(0, description="Clock error bound of the node, ns.")


class ChainOut(Out):
    stream_id: str
    record_id: int
    outcome: str = Field(description="delivered, dropped or failed.")
    provenance: list[HopOut] = Field(description="One hop per node, in order.")
    branch: int | None = None
    replay_id: str | None = None
    error: str | None = None


class RecordProvenance(ChainOut):
    branches: list[ChainOut] = Field(
        default_factory=list, description="Further chains of the record (flat_map outputs).")


class ProvenancePage(Out):
    chains: list[ChainOut]
    count: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end of the window.")


class NodeTypeBody(Body):
    """What one node is."""

    cpus: int = Field(ge=1, le=1024)
    memory_bytes: int = Field(gt=0, le=1 << 50)
    cost_per_hour: float = Field(ge=0, le=1e6, allow_inf_nan=False)


class ConfigurationBody(Body):
    """How to deploy a pipeline (see `GET /configurations`)."""

    nodes: int | dict[str, int] = Field(
        description="Nodes per stage: one count for all stages or {stage: count}.")
    node_type: str = Field(description="Name of a node type.")
    batch_size: int = Field(1024, ge=1, le=1_000_000)
    description: str = Field("", max_length=500)


class CatalogOut(Out):
    configurations: dict[str, dict[str, Any]]
    node_types: dict[str, dict[str, Any]]
    source: str = Field(description="Where the catalog was loaded from (TOML file or defaults).")


class ReplayBody(Body):
    """What to replay, on which configuration, how fast."""

    stream_id: str = Field(description="The stream to replay.", examples=["demo"])
    start_time: TimeValue = Field(description="Window start (inclusive), by hop-0 time.")
    end_time: TimeValue = Field(description="Window end (exclusive).")
    configuration_id: str = Field(description="A configuration of the catalog.",
                                  examples=["small"])
    replay_speed: float = Field(
        1.0, description=f"Multiplier of the original pace (1.0 real time, 2.0 twice as fast); "
        f"0 < speed <= {MAX_SPEED:g}.")
    sink: OutputSink = Field(OutputSink.NULL, strict=False,  # from JSON: a string
                             description="Where replayed records go.")


class RescaleBody(Body):
    configuration_id: str = Field(description="Configuration to scale the running replay to.")


class ReplayProgress(Out):
    phase: str = Field(description="queued, reconstructing, starting nodes, injecting, "
                       "draining, measuring, done.")
    records_total: int | None = None
    records_injected: int = 0
    fraction: float = 0.0


class ReplayOut(Out):
    """A replay's state, progress, and its report once finished (see the report's keys in
    the documentation: records, durationS, targetThroughput, achievedThroughput, latencyNs,
    perHopLatencyNs, pacingLagNs, pacingErrorNs, nodes, scalingSteps, errors, fidelity,
    ...)."""

    replay_id: str
    state: ReplayState
    request: dict[str, Any]
    progress: ReplayProgress
    created_ns: int
    report: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class ReplayAccepted(Out):
    replay_id: str
    state: ReplayState
    location: str = Field(description="Where to poll: /replay/{replayId}.")


class ReplayList(Out):
    replays: list[ReplayOut]


class IngestResult(Out):
    stream_id: str
    records: int = Field(description="Records accepted into the stream log.")
    delivered: int
    dropped: int
    failed: int
