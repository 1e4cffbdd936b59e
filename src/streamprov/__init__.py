"""streamprov: stream pipelines with per-record provenance chains and replay on other hardware.

The public surface is re-exported here; everything else is internal and may change.
"""

from streamprov.errors import (
    InvalidInput,
    NotFound,
    PipelineError,
    StoreError,
    StreamprovError,
)
from streamprov.model import Chain, Hop, Outcome, Record
from streamprov.runtime import (
    CaptureSink,
    JsonLinesSink,
    JsonLinesSource,
    LocalRunner,
    NullSink,
    Pipeline,
    SyntheticSource,
)

__version__ = "0.1.0"

__all__ = [
    "CaptureSink",
    "Chain",
    "Hop",
    "InvalidInput",
    "JsonLinesSink",
    "JsonLinesSource",
    "LocalRunner",
    "NotFound",
    "NullSink",
    "Outcome",
    "Pipeline",
    "PipelineError",
    "Record",
    "StoreError",
    "StreamprovError",
    "SyntheticSource",
    "__version__",
]
