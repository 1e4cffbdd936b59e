from __future__ import annotations

from typing import Any

import pytest

from streamprov.errors import InvalidInput
from streamprov.replay import ReplayRequest


def test_parse_times_and_speed() -> None:
    r = ReplayRequest.parse("demo", "2026-01-01T00:00:00.000000001Z", 10**19 - 1, "small", "2")
    assert r.start_ns % 10**9 == 1 and r.speed == 2.0
    assert r.to_json()["replaySpeed"] == 2.0


@pytest.mark.parametrize(("args", "field"), [
    (("demo", 10, 10, "small", 1.0), "startTime"),
    (("demo", 11, 10, "small", 1.0), "startTime"),
    (("demo", "soon", 10, "small", 1.0), "startTime"),
    (("demo", 0, "2026-02-30T00:00:00Z", "small", 1.0), "endTime"),
    (("demo", 0, "2026-01-01T00:00:00.1234567890Z", "small", 1.0), "endTime"),
    (("demo", 0, 10, "small", 0), "replaySpeed"),
    (("demo", 0, 10, "small", float("nan")), "replaySpeed"),
    (("demo", 0, 10, "small", float("inf")), "replaySpeed"),
    (("demo", 0, 10, "small", 1000.5), "replaySpeed"),
    (("demo", 0, 10, "small", True), "replaySpeed"),
    (("demo", 0, 10, "small", "x"), "replaySpeed"),
    (("de mo", 0, 10, "small", 1.0), "streamId"),
    (("demo", 0, 10, "", 1.0), "configurationId"),
])
def test_bad_requests_name_the_field(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        ReplayRequest.parse(*args)
    assert exc.value.field == field
