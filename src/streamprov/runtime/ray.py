"""The Ray runner: the local runner's pipelines, scaling and replays on a Ray cluster.

Every node instance is a Ray actor: one per ingest source, one ingest actor (writes the stream
log ahead, then routes to the first stage), ``parallelism`` actors per stage, and, for an
embedded (DuckDB) provenance store, one writer actor in front of the file; with PostgreSQL
every actor writes its own chains. A small hub actor carries the stop flag, the ingest count
and captured records back to the driver. Batches travel as numpy columns plus one JSON blob
(``ray_wire.WireBatch``); the protocol is in ``ray_actors``.

Stage actors ask Ray for the configuration's node type (``num_cpus``, ``memory``), so an
autoscaling cluster can add machines for a larger configuration. Without an autoscaler a
configuration the cluster can never hold fails at once (before any actor is created), and an
actor that cannot be placed within ``placement_timeout_s`` fails the start, naming it.

The driver, the sources, the ingest actor, the writer and the hub run on the driver's machine
(they read local input files and hold the DuckDB files); stage actors go wherever Ray places
them. Node ids are the local runner's plus ``@<Ray node id prefix>``.

Faults: an actor that dies, or raises outside an operator, fails the deployment with a
``PipelineError`` naming the node (within one backpressure window). Records already in the
stream log are not re-driven yet: rerun the window with a replay.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from streamprov.errors import InvalidInput, PipelineError, StreamprovError
from streamprov.model import validate_id
from streamprov.runtime.base import next_record_base
from streamprov.runtime.local import Recovery, RunResult, ScaleStep
from streamprov.runtime.pipeline import Pipeline
from streamprov.runtime.recovery import count_from_stores, plan_restart, why_not_restart
from streamprov.runtime.sinks import is_capture
from streamprov.runtime.sources import JsonLinesSource
from streamprov.runtime.worker import ClockFactory, flush_interval_s, system_clock
from streamprov.store import is_server_url

INSTALL_HINT = "the Ray runner needs the ray extra: pip install 'streamprov[ray]'"
_CAPTURE_POLL_S = 0.1


def import_ray() -> ModuleType:
    """The ``ray`` module, or a one-line ``PipelineError`` saying which extra to install."""
    try:
        import ray
    except ImportError:
        raise PipelineError(INSTALL_HINT) from None
    return ray


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """How to reach Ray: ``address`` of an existing cluster (``ray://host:10001`` or
    ``host:6379``; "auto" for the one this machine belongs to), else a local one started with
    these limits, its session files under ``temp_dir``."""

    address: str | None = None
    num_cpus: float | None = None
    object_store_bytes: int = 200 * 1024 * 1024
    temp_dir: Path | None = None


def connect(options: ClusterOptions) -> ModuleType:
    """Join or start the cluster once per process (later calls reuse the connection).

    A local cluster generates Ray's authentication token itself (``~/.ray/auth_token``); to
    join a remote cluster with token authentication, set ``RAY_AUTH_TOKEN`` (or copy the
    head's token file) first: the error says so.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"configure_logging": False, "log_to_driver": True,
                              "ignore_reinit_error": True}
    if options.address:
        kwargs["address"] = options.address
    else:
        kwargs.update(include_dashboard=False, num_cpus=options.num_cpus,
                      object_store_memory=options.object_store_bytes)
        if options.temp_dir is not None:
            options.temp_dir.mkdir(parents=True, exist_ok=True)
            kwargs["_temp_dir"] = str(options.temp_dir.absolute())
    try:
        ray.init(**kwargs)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "token" in text.lower() or "auth" in text.lower():
            raise PipelineError(
                f"Ray cluster {options.address}: authentication failed ({text}); set "
                "RAY_AUTH_TOKEN to the head's token (`ray get-auth-token` on the head)"
            ) from None
        where = f"Ray cluster {options.address}" if options.address else "local Ray cluster"
        raise PipelineError(f"{where}: cannot connect: {text}") from None
    return ray


@dataclass(slots=True)
class _Actor:
    role: str
    handle: Any
    stage_index: int = -1
    slot: int = -1
    node_id: str = ""
    pid: int = 0
    ray_node: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


class RayRunner:
    """Starts pipelines as Ray actors; same ``start`` as ``LocalRunner``.

    ``num_cpus``/``memory_bytes`` is what each stage actor asks Ray for (a configuration's
    node type); ``queue_batches`` bounds the unacknowledged pushes from one producer to one
    actor. ``autoscale``: the cluster can grow, so demand beyond its present size waits for
    the autoscaler (up to ``placement_timeout_s``) instead of failing at once.
    """

    def __init__(self, *, batch_size: int = 1024, queue_batches: int = 8,
                 num_cpus: float = 1.0, memory_bytes: int | None = None,
                 cluster: ClusterOptions | None = None, autoscale: bool = False,
                 placement_timeout_s: float = 60.0, max_restarts: int = 10) -> None:
        if batch_size < 1:
            raise InvalidInput("batch size must be at least 1", field="batchSize")
        if queue_batches < 1:
            raise InvalidInput("queue size must be at least 1", field="queueBatches")
        if not num_cpus >= 0:
            raise InvalidInput("num_cpus must not be negative", field="cpus")
        if memory_bytes is not None and memory_bytes <= 0:
            raise InvalidInput("memory must be positive", field="memoryBytes")
        self.batch_size = batch_size
        self.queue_batches = queue_batches
        self.num_cpus = num_cpus
        self.memory_bytes = memory_bytes
        self.cluster = cluster or ClusterOptions()
        self.autoscale = autoscale
        self.placement_timeout_s = placement_timeout_s
        self.max_restarts = max_restarts

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
        clock_factory: ClockFactory = system_clock,
    ) -> RayDeployment:
        """Start ``pipeline``; records get ids from ``record_base`` (default: after the
        stream log's last record of the stream)."""
        pipeline.validated()
        src = pipeline.source
        if isinstance(src, JsonLinesSource) and src.path == "-":
            raise InvalidInput("the Ray runner cannot read stdin; give --input a file",
                               field="input")
        sid = validate_id(stream_id or pipeline.name, "stream")
        ray = connect(self.cluster)
        self.check_capacity(ray, {s.name: s.parallelism for s in pipeline.stages})
        record_base = next_record_base(stream_log_url, sid, record_base)
        return RayDeployment(self, ray, pipeline, sid, replay_id, record_base, log_ingest,
                             provenance_url, stream_log_url, clock_factory)

    def actor_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.memory_bytes is not None:
            opts["memory"] = self.memory_bytes
        return opts

    def check_capacity(self, ray: ModuleType, counts: dict[str, int]) -> None:
        """Refuse at once what this cluster can never hold (unless it autoscales)."""
        if self.autoscale:
            return
        actors = sum(counts.values())
        need = {"CPU": self.num_cpus, "memory": float(self.memory_bytes or 0)}
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        for res, per_actor in need.items():
            if per_actor <= 0:
                continue
            biggest = max((n.get(res, 0.0) for n in nodes), default=0.0)
            unit = "GiB" if res == "memory" else "CPUs"
            scale = 1 / (1 << 30) if res == "memory" else 1.0
            if per_actor > biggest:
                raise PipelineError(
                    f"one node asks for {per_actor * scale:g} {unit} but the largest Ray "
                    f"node has {biggest * scale:g}; the cluster can never place it (use a "
                    "smaller node type, or an autoscaling cluster with larger machines)")
            have = total.get(res, 0.0)
            if per_actor * actors > have + 1e-9:
                raise PipelineError(
                    f"the configuration asks for {actors} nodes x {per_actor * scale:g} "
                    f"{unit} = {per_actor * actors * scale:g} {unit}, the Ray cluster has "
                    f"{have * scale:g} and does not autoscale")


class RayDeployment:
    """A pipeline running on Ray: the same interface as ``local.Deployment``.

    An actor that dies (killed, its process or machine lost) restarts the deployment as on
    the local runner: every actor of the epoch is killed, the stores say which logged records
    have no chain, and a new epoch re-drives them while resumable sources go on after what
    they had logged. Deaths surface through the calls that reach the dead actor, so they are
    noticed while pushes flow, or at the latest by ``wait``/``stop``.
    """

    def __init__(self, runner: RayRunner, ray: ModuleType, pipeline: Pipeline,
                 stream_id: str, replay_id: str, record_base: int, log_ingest: bool,
                 provenance_url: str, stream_log_url: str,
                 clock_factory: ClockFactory) -> None:
        from streamprov.runtime import ray_actors as ra

        self._ra = ra
        self._ray = ray
        self._record_base = record_base
        self.runner = runner
        self.pipeline = pipeline
        self.stream_id = stream_id
        self.replay_id = replay_id
        self.captured: list[dict[str, Any]] = []
        self.scaling: list[ScaleStep] = []
        self.recoveries: list[Recovery] = []
        self.warnings: list[str] = []
        self._lock = threading.RLock()
        self._finished: RunResult | None = None
        self._retired: list[_Actor] = []
        self._source_refs: list[Any] = []
        self._redrive_ref: Any = None
        self._killed = False
        self._ingested_before = 0
        self._stopping = False
        self._fatal: BaseException | None = None
        self._epoch = 0
        self._attempts = 0
        self._scratch: Path | None = None
        self._urls = (provenance_url, stream_log_url)
        self._counts = [s.parallelism for s in pipeline.stages]
        direct = is_server_url(provenance_url)
        self.wiring = ra.RayWiring(
            pipeline=pipeline, stream_id=stream_id, replay_id=replay_id,
            batch_size=runner.batch_size, window=runner.queue_batches,
            stream_log_url=stream_log_url, provenance_url=provenance_url,
            record_base=record_base, log_ingest=log_ingest, clock_factory=clock_factory,
            direct_chains=direct, writer_flush_s=flush_interval_s(provenance_url))
        here = ray.get_runtime_context().get_node_id()
        self._here = here
        strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(here, soft=False)
        # the driver's machine: local files (input, DuckDB, replay windows) live there
        self._local_opts: dict[str, Any] = {"num_cpus": 0, "scheduling_strategy": strategy}
        self._remote = {name: ray.remote(cls) for name, cls in (
            ("hub", ra.Hub), ("source", ra.SourceNode), ("ingest", ra.IngestNode),
            ("stage", ra.StageNode), ("writer", ra.ChainWriter))}
        self._with_capture = is_capture([s.sink for s in pipeline.stages])
        self._start_epoch()
        self._started = time.perf_counter()
        self.started_ns = time.time_ns()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name="streamprov-ray-supervisor")
        self._supervisor.start()

    def _start_epoch(self) -> None:
        """Create every actor of the current wiring and set the sources going."""
        ray = self._ray
        self._killed = False
        self._stages: list[dict[int, _Actor]] = [{} for _ in self.pipeline.stages]
        self._sources: list[_Actor] = []
        self._hub = self._remote["hub"].options(max_concurrency=4, **self._local_opts).remote()
        self._capture_stop = threading.Event()
        self._capture_thread: threading.Thread | None = None
        try:
            self._start_all()
        except BaseException:
            self._kill_all()
            raise
        if self._with_capture:
            self._capture_thread = threading.Thread(target=self._pump_capture, daemon=True,
                                                    name="streamprov-ray-capture")
            self._capture_thread.start()
        # records a crash left unfinished go first: Ray runs one caller's calls to an actor
        # in order, and the sources only start pushing after this call was made
        self._redrive_ref = (self._ingest.handle.redrive.remote()
                             if self.wiring.redrive_path else None)
        self._source_refs = [a.handle.run.remote() for a in self._sources]
        del ray

    # -- restarts after an actor died ---------------------------------------------------
    def _restart(self, died: PipelineError) -> None:
        why_not = why_not_restart(replay_id=self.replay_id, log_ingest=self.wiring.log_ingest,
                                  source=self.pipeline.source, attempts=self._attempts,
                                  max_restarts=self.runner.max_restarts)
        if why_not is not None:
            raise PipelineError(f"{died}; not restarting: {why_not}") from None
        self._attempts += 1
        started = time.perf_counter()
        at_ns = time.time_ns()
        with contextlib.suppress(Exception):  # what the sinks had handed over
            self.captured.extend(self._ray.get(self._hub.take_captured.remote(), timeout=5))
        if self._writer is not None:  # a surviving writer stores the chains it holds
            with contextlib.suppress(Exception):
                self._ray.get(self._writer.handle.finish.remote(), timeout=5)
        self._kill_all()
        if self._capture_thread is not None:
            self._capture_thread.join(10)
        provenance_url, stream_log_url = self._urls
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="streamprov-redrive-"))
        # an embedded store's file stays locked until the killed actor's process is gone
        nxt = plan_restart(stream_log_url, provenance_url, self.stream_id,
                           from_record=self._record_base, record_base=self._record_base,
                           sources=self.pipeline.sources,
                           redrive_path=self._scratch / f"epoch-{self._epoch + 1}.arrow",
                           origin_node=self._origin_nodes, wait_s=30.0)
        self._epoch += 1
        self._retired = []
        self._ingested_before = nxt.logged_since_base
        self.wiring = replace(self.wiring, epoch=self._epoch, source_skip=nxt.skip,
                              redrive_path=None if nxt.redrive is None else str(nxt.redrive))
        self._start_epoch()
        dead = re.findall(r"node (\S+) died", str(died))
        self.recoveries.append(Recovery(dead[-1] if dead else str(died), 0, at_ns,
                                        nxt.orphans, time.perf_counter() - started))

    def _origin_nodes(self, ids: Any) -> list[str]:
        k = ((ids - self._record_base) % self.pipeline.sources).tolist()
        suffix = "@" + self._here[:8]  # sources run on the driver's machine
        names = [self.wiring.node_id("source", i, suffix) for i in range(self.pipeline.sources)]
        return [names[i] for i in k]

    def _recovering(self, died: PipelineError) -> None:
        """Restart after ``died``, again if an actor dies while the new epoch starts."""
        while True:
            try:
                self._restart(died)
                return
            except self._ra.NodeDied as again:
                died = again

    def _supervise(self) -> None:
        """Notice a failed source call (an actor down its path died) while nobody waits."""
        ray = self._ray
        while self._finished is None and self._fatal is None:
            time.sleep(0.2)
            if not self._lock.acquire(timeout=0.1):
                continue  # wait, stop or scale holds it and handles deaths itself
            try:
                if self._finished is not None or self._killed or not self._source_refs:
                    continue
                done, _ = ray.wait(self._source_refs, num_returns=len(self._source_refs),
                                   timeout=0)
                for ref in done:
                    try:
                        self._ra.settle(ref, "source")
                    except self._ra.NodeDied as died:
                        self._recovering(died)
                        break
                    except Exception:
                        continue  # an operator's or store's failure: wait/stop reports it
            except BaseException as exc:  # could not restart: wait/stop raises it
                self._fatal = exc
                self._kill_all()
            finally:
                self._lock.release()

    # -- actors -------------------------------------------------------------------------
    def _new_stage(self, index: int, slot: int) -> _Actor:
        nxt = index + 1 < len(self.pipeline.stages)
        members = tuple(sorted(self._stages[index + 1])) if nxt else None
        handles = ({s: a.handle for s, a in self._stages[index + 1].items()} if nxt else None)
        stage = self.pipeline.stages[index]
        handle = self._remote["stage"].options(**self.runner.actor_options()).remote(
            self.wiring, index, slot, members, handles, self._writer_handle, self._hub)
        return _Actor(f"{stage.name}-{slot}", handle, index, slot)

    def _await_ready(self, actors: list[_Actor]) -> None:
        ray = self._ray
        refs = [a.handle.ready.remote() for a in actors]
        _, pending = ray.wait(refs, num_returns=len(refs),
                                  timeout=self.runner.placement_timeout_s)
        if pending:
            waiting = [a.role for a, r in zip(actors, refs, strict=True) if r in pending]
            opts = self.runner.actor_options()
            raise PipelineError(
                f"Ray could not start {', '.join(waiting)} within "
                f"{self.runner.placement_timeout_s:.0f}s (each asks for {opts}); the cluster "
                "lacks the resources, or its autoscaler could not add them")
        for a, ref in zip(actors, refs, strict=True):
            a.node_id, a.pid, a.ray_node = self._ra.settle(ref, a.role)

    def _start_all(self) -> None:
        p = self.pipeline
        w = self.wiring
        self._writer: _Actor | None = None
        self._writer_handle: Any = None
        first: list[_Actor] = [_Actor("hub", self._hub)]
        if p.provenance and not w.direct_chains:
            handle = self._remote["writer"].options(**self._local_opts).remote(w)
            self._writer = _Actor("writer", handle)
            self._writer_handle = handle
            first.append(self._writer)
        created: list[_Actor] = []
        for index in reversed(range(len(p.stages))):
            for slot in range(self._counts[index]):
                actor = self._new_stage(index, slot)
                self._stages[index][slot] = actor
                created.append(actor)
        handles = {s: a.handle for s, a in self._stages[0].items()}
        ingest = self._remote["ingest"].options(**self._local_opts).remote(
            w, tuple(sorted(handles)), handles, self._writer_handle, self._hub)
        self._ingest = _Actor("ingest", ingest)
        self._await_ready([*first, *created, self._ingest])
        # sources last, once everything downstream is up (start-up is not latency)
        self._sources = [
            _Actor(f"source-{k}", self._remote["source"].options(**self._local_opts).remote(
                w, k, ingest, self._hub))
            for k in range(p.sources)
        ]
        self._await_ready(self._sources)

    def _all_actors(self) -> list[_Actor]:
        out = [_Actor("hub", self._hub), *self._sources]
        if hasattr(self, "_ingest"):
            out.append(self._ingest)
        out += [a for stage in self._stages for a in stage.values()]
        if getattr(self, "_writer", None) is not None:
            assert self._writer is not None
            out.append(self._writer)
        return out

    def _kill_all(self) -> None:
        self._killed = True
        self._capture_stop.set()
        for a in self._all_actors():
            with contextlib.suppress(Exception):  # already gone
                self._ray.kill(a.handle, no_restart=True)

    def _pump_capture(self) -> None:
        while not self._capture_stop.wait(_CAPTURE_POLL_S):
            try:
                got = self._ray.get(self._hub.take_captured.remote())
            except Exception:
                return
            self.captured.extend(got)

    def node_actor(self, stage: str, slot: int) -> Any:
        """The Ray actor handle of one stage instance (for fault injection in tests)."""
        return self._stages[self.pipeline.stage_index(stage)][slot].handle

    # -- public API -------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        """Process id of every node actor on this machine that is up, by role (a snapshot
        taken without the deployment's lock: ``wait`` holds it for the whole run)."""
        ray = self._ray
        here = self._here
        out: dict[str, int] = {}
        if self._killed or self._finished is not None:
            return out
        refs = list(self._source_refs)
        for a in self._all_actors():
            if a.role == "hub" or a.ray_node != here or not a.pid:
                continue
            if a.role.startswith("source-"):
                k = int(a.role.split("-")[1])
                if k < len(refs) and ray.wait([refs[k]], timeout=0)[0]:
                    continue
            out[a.role] = a.pid
        return out

    def ingested(self) -> int:
        """Records appended to the stream log so far (updated a few times a second)."""
        if self._finished is not None:
            return self._finished.ingested
        try:
            return self._ingested_before + int(
                self._ray.get(self._hub.ingested.remote(), timeout=5))
        except Exception:
            return self._ingested_before

    @property
    def finished(self) -> bool:
        return self._finished is not None

    def parallelism(self) -> dict[str, int]:
        return {s.name: len(self._stages[i]) for i, s in enumerate(self.pipeline.stages)}

    def _upstream(self, index: int) -> list[_Actor]:
        return [self._ingest] if index == 0 else list(self._stages[index - 1].values())

    def scale(self, stage: str, n: int) -> ScaleStep:
        """Run ``n`` instances of ``stage``: start new actors or drain surplus ones.

        Only keys whose ring owner changes move. A leaving actor is retired only after every
        producer has stopped routing to it and its pushes are done, so nothing is lost or
        duplicated.
        """
        index = self.pipeline.stage_index(stage)
        st = self.pipeline.stages[index]
        if st.sink is not None and n > 1 and not st.sink.parallel_safe:
            raise InvalidInput(f"stage {stage!r} writes one output and cannot scale out",
                               field="parallelism")
        if not 1 <= n <= self.pipeline.max_parallelism:
            raise InvalidInput(
                f"parallelism for {stage!r} must be 1..{self.pipeline.max_parallelism}",
                field="parallelism",
            )
        ra = self._ra
        with self._lock:
            if self._finished is not None:
                raise PipelineError("the deployment has already finished")
            if self._fatal is not None:
                raise self._fatal
            started = time.perf_counter()
            started_ns = time.time_ns()
            current = self._stages[index]
            before = len(current)
            try:
                if n > before:
                    self.runner.check_capacity(self._ray, {
                        s.name: len(self._stages[i]) + (n - before if i == index else 0)
                        for i, s in enumerate(self.pipeline.stages)})
                    free = [s for s in range(self.pipeline.max_parallelism) if s not in current]
                    new = [self._new_stage(index, s) for s in free[: n - before]]
                    try:
                        self._await_ready(new)
                    except BaseException:
                        for a in new:
                            self._ray.kill(a.handle, no_restart=True)
                        raise
                    for a in new:
                        current[a.slot] = a
                    members = tuple(sorted(current))
                    handles = {a.slot: a.handle for a in new}
                    refs = [u.handle.reroute.remote(members, handles)
                            for u in self._upstream(index)]
                    for u, ref in zip(self._upstream(index), refs, strict=True):
                        ra.settle(ref, u.role)
                elif n < before:
                    leaving = [current[s] for s in sorted(current)[n:]]
                    for a in leaving:
                        del current[a.slot]
                    members = tuple(sorted(current))
                    ups = self._upstream(index)
                    refs = [u.handle.reroute.remote(members, {}) for u in ups]
                    for u, ref in zip(ups, refs, strict=True):
                        ra.settle(ref, u.role)
                    done = [a.handle.finish.remote() for a in leaving]
                    for a, ref in zip(leaving, done, strict=True):
                        a.stats = ra.settle(ref, a.role)
                        self._retired.append(a)
                        self._ray.kill(a.handle, no_restart=True)
            except ra.NodeDied as died:  # the restart brings the new parallelism up
                self._counts[index] = n
                self._recovering(died)
            except StreamprovError:
                raise
            except Exception as exc:
                raise PipelineError(f"scaling {stage!r}: {exc}") from None
            self._counts[index] = n
            step = ScaleStep(stage, before, n, started_ns, time.perf_counter() - started)
            self.scaling.append(step)
            return step

    def wait(self, timeout_s: float | None = None) -> RunResult:
        """Run until every source is exhausted, then drain and return the result."""
        return self._finish(stop=False, timeout_s=timeout_s)

    def stop(self, timeout_s: float | None = 60.0) -> RunResult:
        """Stop the sources and drain every record already ingested."""
        return self._finish(stop=True, timeout_s=timeout_s)

    def _finish(self, *, stop: bool, timeout_s: float | None) -> RunResult:
        if stop and not self._killed:
            self._stopping = True
            with contextlib.suppress(Exception):  # (a restart makes a new hub: set again)
                self._ray.get(self._hub.set_stop.remote(), timeout=10)
        # the sources run on without the lock held, so ``scale`` and the supervisor's
        # restarts can act meanwhile
        self._await_sources(timeout_s)
        with self._lock:
            if self._finished is not None:
                return self._finished
            self._stopping = self._stopping or stop
            try:
                if self._fatal is not None:
                    raise self._fatal
                while True:
                    try:
                        self._drain_epoch(timeout_s)
                        break
                    except self._ra.NodeDied as died:
                        self._recovering(died)
            except BaseException:
                self._kill_all()
                raise
            finally:
                if self._scratch is not None:
                    shutil.rmtree(self._scratch, ignore_errors=True)
            self._finished = self._result()
            self._kill_all()
            # no thread of this deployment may outlive it: an object ref freed after
            # ``ray.shutdown()`` (the supervisor holding the last reference) ends the process
            self._source_refs = []
            self._redrive_ref = None
        if self._supervisor is not threading.current_thread():
            self._supervisor.join(5)
        return self._finished

    def _await_sources(self, timeout_s: float | None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._finished is None and self._fatal is None:
            refs = list(self._source_refs)
            if refs and not self._killed:
                _, pending = self._ray.wait(refs, num_returns=len(refs), timeout=0.2)
                if not pending and refs == self._source_refs:
                    return
            else:
                time.sleep(0.05)
            if deadline is not None and time.monotonic() > deadline:
                return

    def _drain_epoch(self, timeout_s: float | None) -> None:
        ray = self._ray
        ra = self._ra
        if self._stopping:
            ray.get(self._hub.set_stop.remote())
        _, pending = ray.wait(self._source_refs, num_returns=len(self._source_refs),
                              timeout=timeout_s)
        for a, ref in zip(self._sources, self._source_refs, strict=True):
            if ref in pending:
                raise PipelineError(f"{a.role} did not finish within {timeout_s}s")
            a.stats = ra.settle(ref, f"source {a.role}")
        if self._redrive_ref is not None:
            ra.settle(self._redrive_ref, "ingest")
        self._ingest.stats = ra.settle(self._ingest.handle.finish.remote(), "ingest")
        for stage in self._stages:
            actors = list(stage.values())
            refs = [a.handle.finish.remote() for a in actors]
            for a, ref in zip(actors, refs, strict=True):
                a.stats = ra.settle(ref, a.role)
        if self._writer is not None:
            self._writer.stats = ra.settle(self._writer.handle.finish.remote(),
                                           "provenance writer")
        self._capture_stop.set()
        if self._capture_thread is not None:
            self._capture_thread.join(10)
        self.captured.extend(ray.get(self._hub.take_captured.remote()))

    def _result(self) -> RunResult:
        stages = [a for st in self._stages for a in st.values()] + self._retired
        nodes = [dict(a.stats, role=a.role) for a in
                 [*self._sources, self._ingest, *stages,
                  *([self._writer] if self._writer is not None else [])]]
        ingested = sum(a.stats.get("recordsOut", 0) + a.stats.get("failed", 0)
                       for a in self._sources)
        direct = [self._ingest, *stages]
        if self._writer is not None:
            chains = self._writer.stats.get("chains", 0)
            rows = self._writer.stats.get("rowsWritten", 0)
        else:
            chains = sum(a.stats.get("chainsWritten", 0) for a in direct)
            rows = sum(a.stats.get("rowsWritten", 0) for a in direct)
        result = RunResult(
            stream_id=self.stream_id,
            replay_id=self.replay_id,
            duration_s=time.perf_counter() - self._started,
            ingested=ingested,
            delivered=sum(a.stats.get("delivered", 0) for a in stages),
            dropped=sum(a.stats.get("dropped", 0) for a in stages),
            failed=sum(a.stats.get("failed", 0) for a in stages)
            + sum(a.stats.get("failed", 0) for a in self._sources),
            chains_written=chains,
            rows_written=rows,
            nodes=nodes,
            scaling=list(self.scaling),
            from_record=0 if self.replay_id else self._record_base,
            recoveries=list(self.recoveries),
            duplicated_outputs=0,
        )
        if self.recoveries:
            provenance_url, stream_log_url = self._urls
            count_from_stores(result, stream_log_url, provenance_url,
                              record_base=self._record_base,
                              captured=self.captured if self._with_capture else None)
        return result

    def __enter__(self) -> RayDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._finished is None:
            if exc[0] is None:
                self.stop()
            else:
                self._kill_all()


__all__ = ["INSTALL_HINT", "ClusterOptions", "RayDeployment", "RayRunner", "connect",
           "import_ray"]
