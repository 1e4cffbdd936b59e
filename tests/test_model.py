from __future__ import annotations

import pytest

from streamprov.errors import InvalidInput
from streamprov.model import (
    Chain,
    Hop,
    Outcome,
    format_time_ns,
    parse_time_ns,
    validate_id,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        (1_700_000_000_123_456_789, 1_700_000_000_123_456_789),
        ("1700000000123456789", 1_700_000_000_123_456_789),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000_000_000),
        ("2023-11-14T22:13:20.123456789Z", 1_700_000_000_123_456_789),
        ("2023-11-14T22:13:20.5Z", 1_700_000_000_500_000_000),
        ("2023-11-15T00:13:20.000000001+02:00", 1_700_000_000_000_000_001),
    ],
)
def test_parse_time_accepts_ns_and_rfc3339(text: str | int, expected: int) -> None:
    assert parse_time_ns(text) == expected


@pytest.mark.parametrize(
    "text",
    ["yesterday", "2023-11-14", "2023-11-14T22:13:20.1234567891Z", "-5", "",
     "2023-13-01T00:00:00Z"],
)
def test_parse_time_rejects_garbage_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_time_ns(text, "start")
    assert exc.value.field == "start"
    assert "start" in str(exc.value)


def test_format_round_trips() -> None:
    ts = 1_700_000_000_123_456_789
    assert parse_time_ns(format_time_ns(ts)) == ts


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "../etc", "-lead", "ü"])
def test_validate_id_rejects(bad: str) -> None:
    with pytest.raises(InvalidInput):
        validate_id(bad, "stream")


def test_chain_json_has_the_specification_shape() -> None:
    chain = Chain("s", 7, (Hop("p/source/0", 10, 0, 0), Hop("p/sink/0", 12, 3, 5)),
                  Outcome.DELIVERED)
    doc = chain.to_json()
    assert doc["provenance"] == [
        {"nodeId": "p/source/0", "timestamp": 10, "logical": 0, "errorNs": 0},
        {"nodeId": "p/sink/0", "timestamp": 12, "logical": 3, "errorNs": 5},
    ]
    assert doc["streamId"] == "s"
    assert doc["recordId"] == 7
    assert doc["outcome"] == "delivered"
    assert chain.latency_ns == 2
