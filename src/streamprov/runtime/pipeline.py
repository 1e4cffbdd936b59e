"""Declaring pipelines: a source, a chain of stages, a sink.

Functions given to stages run in other processes, so they must be picklable: define them at
module level (no lambdas or closures). A pipeline defined at module level is addressable by
import path, ``package.module:name``, which is how the CLI finds it again.
"""

from __future__ import annotations

import enum
import importlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from streamprov.errors import InvalidInput, NotFound, PipelineError
from streamprov.model import validate_id
from streamprov.runtime.sinks import NullSink, Sink
from streamprov.runtime.sources import Source

KeyFn = Callable[[Any], Any]


class StageKind(enum.StrEnum):
    MAP = "map"
    FILTER = "filter"
    FLAT_MAP = "flat_map"
    BATCH = "batch"
    SINK = "sink"


@dataclass(frozen=True, slots=True)
class Stage:
    """One processing step, run by ``parallelism`` node instances.

    ``key`` computes a routing key from a payload: records with equal keys go to the same
    instance (consistent hashing). Without it records are spread by record id.
    """

    name: str
    kind: StageKind
    fn: Callable[..., Any] | None = None
    parallelism: int = 1
    key: KeyFn | None = None
    sink: Sink | None = None


@dataclass(slots=True)
class Pipeline:
    """A source feeding stages in order, ending in a sink.

    ``sources`` independent ingest sources each run the source with their own index (and
    their own clock): each stamps hop 0 of its records. ``max_parallelism`` bounds how far a
    stage can be scaled out while running. ``provenance=False`` turns chains off entirely
    (to measure their cost); the stream log is still written.
    """

    name: str
    source: Source | None = None
    sources: int = 1
    stages: list[Stage] = field(default_factory=list)
    max_parallelism: int = 8
    provenance: bool = True
    description: str = ""
    ref: str | None = None
    """Import path (``package.module:name``) this pipeline can be loaded from again."""

    def __post_init__(self) -> None:
        validate_id(self.name, "pipeline name")
        if "/" in self.name:
            raise InvalidInput("pipeline name must not contain '/'", field="pipeline name")

    # -- building -----------------------------------------------------------------------
    def _add(self, stage: Stage) -> Pipeline:
        validate_id(stage.name, "stage name")
        if stage.name == "source" or any(s.name == stage.name for s in self.stages):
            raise InvalidInput(f"stage name {stage.name!r} is used twice", field="stage name")
        if self.stages and self.stages[-1].kind is StageKind.SINK:
            raise PipelineError(f"stage {stage.name!r} comes after the sink")
        if not 1 <= stage.parallelism <= self.max_parallelism:
            raise InvalidInput(
                f"stage {stage.name!r}: parallelism must be 1..{self.max_parallelism}",
                field="parallelism",
            )
        self.stages.append(stage)
        return self

    def map(self, name: str, fn: Callable[[Any], Any], *, parallelism: int = 1,
            key: KeyFn | None = None) -> Pipeline:
        """Replace each payload by ``fn(payload)``. An exception fails that record only."""
        return self._add(Stage(name, StageKind.MAP, fn, parallelism, key))

    def filter(self, name: str, fn: Callable[[Any], bool], *, parallelism: int = 1,
               key: KeyFn | None = None) -> Pipeline:
        """Keep records for which ``fn(payload)`` is true; the rest end as ``dropped``."""
        return self._add(Stage(name, StageKind.FILTER, fn, parallelism, key))

    def flat_map(self, name: str, fn: Callable[[Any], Any], *, parallelism: int = 1,
                 key: KeyFn | None = None) -> Pipeline:
        """Replace each payload by the items of ``fn(payload)``: none drops the record, several
        continue as branches of it (branch 0 keeps the record's own chain key)."""
        return self._add(Stage(name, StageKind.FLAT_MAP, fn, parallelism, key))

    def batch(self, name: str, fn: Callable[[Any], Any], *, parallelism: int = 1,
              key: KeyFn | None = None) -> Pipeline:
        """Apply ``fn(pyarrow.RecordBatch) -> pyarrow.RecordBatch`` to whole batches of
        payloads (dicts become rows); it must return as many rows as it received. An exception
        fails the whole batch."""
        return self._add(Stage(name, StageKind.BATCH, fn, parallelism, key))

    def sink(self, sink: Sink | None = None, *, name: str = "sink",
             parallelism: int = 1) -> Pipeline:
        """End the pipeline: records reaching it are ``delivered``."""
        sink = sink if sink is not None else NullSink()
        if parallelism > 1 and not sink.parallel_safe:
            raise InvalidInput(
                f"{type(sink).__name__} writes one output and cannot run in parallel",
                field="parallelism",
            )
        return self._add(Stage(name, StageKind.SINK, None, parallelism, sink=sink))

    # -- derived ------------------------------------------------------------------------
    def validated(self) -> Pipeline:
        """Check the pipeline can run; returns it for chaining."""
        if self.source is None:
            raise PipelineError(f"pipeline {self.name!r} has no source")
        if not self.stages or self.stages[-1].kind is not StageKind.SINK:
            raise PipelineError(f"pipeline {self.name!r} does not end in a sink")
        limit = self.source.max_instances
        if not 1 <= self.sources <= (limit or 64):
            raise InvalidInput(
                f"sources must be 1..{limit or 64} for {type(self.source).__name__}",
                field="sources",
            )
        for stage in self.stages:
            for label, fn in (("function", stage.fn), ("key", stage.key)):
                if fn is None:
                    continue
                try:
                    pickle.dumps(fn)
                except Exception as exc:
                    raise PipelineError(
                        f"stage {stage.name!r}: its {label} cannot be sent to a worker process "
                        f"({exc}); define it at module level, not as a lambda or closure"
                    ) from exc
        return self

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise NotFound(f"pipeline {self.name!r} has no stage {name!r}", field="stage")

    def stage_index(self, name: str) -> int:
        return self.stages.index(self.stage(name))

    def with_source(self, source: Source, sources: int | None = None) -> Pipeline:
        return replace(self, source=source, sources=sources or self.sources,
                       stages=list(self.stages))

    def with_sink(self, sink: Sink) -> Pipeline:
        last = self.stages[-1]
        stages = [*self.stages[:-1], replace(last, sink=sink, parallelism=1)]
        return replace(self, stages=stages)

    def with_parallelism(self, counts: dict[str, int]) -> Pipeline:
        stages = []
        for s in self.stages:
            n = counts.get(s.name, s.parallelism)
            if not 1 <= n <= self.max_parallelism:
                raise InvalidInput(
                    f"stage {s.name!r}: parallelism must be 1..{self.max_parallelism}",
                    field="parallelism",
                )
            stages.append(replace(s, parallelism=n))
        return replace(self, stages=stages)

    def hops_per_record(self) -> int:
        """Chain length of a record that reaches the sink without branching."""
        return 1 + len(self.stages)


def load_pipeline(ref: str) -> Pipeline:
    """Import ``package.module:name`` and return the pipeline (or call a factory) it names."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInput(
            f"pipeline {ref!r}: give it as package.module:name", field="pipeline"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NotFound(f"pipeline {ref!r}: cannot import {module_name}: {exc}",
                       field="pipeline") from exc
    obj = getattr(module, attr, None)
    if obj is None:
        raise NotFound(f"pipeline {ref!r}: {module_name} has no {attr!r}", field="pipeline")
    if callable(obj) and not isinstance(obj, Pipeline):
        obj = obj()
    if not isinstance(obj, Pipeline):
        raise InvalidInput(f"pipeline {ref!r} is a {type(obj).__name__}, not a Pipeline",
                           field="pipeline")
    return replace(obj, ref=ref, stages=list(obj.stages))
