"""The smallest useful pipeline: pass records through one map to the sink.

Use it with ``streamprov run streamprov.examples.passthrough:pipeline --input FILE``.
"""

from __future__ import annotations

from typing import Any

from streamprov.runtime import NullSink, Pipeline, SyntheticSource


def passthrough(payload: Any) -> Any:
    return payload


pipeline = (
    Pipeline("passthrough", source=SyntheticSource(records=1000))
    .map("pass", passthrough)
    .sink(NullSink())
)
