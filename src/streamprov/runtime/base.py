"""What every runner offers: start a pipeline, get a deployment to scale, wait for or stop.

``LocalRunner`` (OS processes) and ``RayRunner`` (Ray actors) implement these protocols; the
app, the replay engine and the autoscaler only ever use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from streamprov.runtime.local import RunResult, ScaleStep
    from streamprov.runtime.pipeline import Pipeline
    from streamprov.runtime.worker import ClockFactory


class Deployment(Protocol):
    """A running pipeline.

    ``scale`` loses and duplicates no record; ``wait`` returns once every source is exhausted
    and everything ingested has ended in a chain; ``stop`` ends the sources early and drains
    the same way. After a crash of a node the deployment fails with ``PipelineError`` naming
    it; records already in the stream log are not lost, but (today) not re-driven either.

    Optional: ``queue_depths() -> dict[str, int]``, batches waiting per inbox (``ingest``,
    ``<stage>-<slot>``, ``writer``) for monitoring; the local runner's deployment has it,
    and ``GET /metrics`` skips deployments without it.
    """

    stream_id: str
    replay_id: str
    captured: list[dict[str, Any]]
    scaling: list[ScaleStep]

    def scale(self, stage: str, n: int) -> ScaleStep: ...

    def wait(self, timeout_s: float | None = None) -> RunResult: ...

    def stop(self, timeout_s: float | None = 60.0) -> RunResult: ...

    def parallelism(self) -> dict[str, int]: ...

    def ingested(self) -> int: ...

    def pids(self) -> dict[str, int]: ...


class Runner(Protocol):
    """Turns a pipeline into running node instances.

    Records get ids from ``record_base`` (default: after the stream log's last record of the
    stream); with ``replay_id`` every chain is stored under it; ``log_ingest=False`` skips the
    stream log (a replay's records are in it already); ``clock_factory`` builds each node's
    physical clock inside the node.
    """

    def start(
        self,
        pipeline: Pipeline,
        *,
        provenance_url: str,
        stream_log_url: str,
        stream_id: str | None = None,
        replay_id: str = "",
        record_base: int | None = None,
        log_ingest: bool = True,
        clock_factory: ClockFactory = ...,
    ) -> Deployment: ...


def next_record_base(stream_log_url: str, stream_id: str, record_base: int | None) -> int:
    """``record_base`` if given, else one past the stream log's last record of the stream:
    what both runners assign new record ids from."""
    if record_base is not None:
        return record_base
    from streamprov.store import open_stream_log

    log = open_stream_log(stream_log_url)
    try:
        return log.next_record_id(stream_id)
    finally:
        log.close()
