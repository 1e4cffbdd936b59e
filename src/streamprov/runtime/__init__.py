"""Pipelines and the runners that execute them."""

from streamprov.runtime.local import Deployment, LocalRunner, RunResult, ScaleStep
from streamprov.runtime.pipeline import Pipeline, Stage, StageKind, load_pipeline
from streamprov.runtime.sinks import CaptureSink, JsonLinesSink, NullSink, Sink
from streamprov.runtime.sources import JsonLinesSource, Source, SourceChunk, SyntheticSource

__all__ = [
    "CaptureSink",
    "Deployment",
    "JsonLinesSink",
    "JsonLinesSource",
    "LocalRunner",
    "NullSink",
    "Pipeline",
    "RunResult",
    "ScaleStep",
    "Sink",
    "Source",
    "SourceChunk",
    "Stage",
    "StageKind",
    "SyntheticSource",
    "load_pipeline",
]
