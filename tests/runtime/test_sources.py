from __future__ import annotations

from pathlib import Path

import pytest

from streamprov.errors import InvalidInput
from streamprov.runtime.sources import JsonLinesSource, SyntheticSource


def payloads(src: SyntheticSource, index: int, count: int, batch: int) -> list[object]:
    return [p for chunk in src.read(index, count, batch) for p in chunk.payloads]


def test_synthetic_values_do_not_depend_on_batching() -> None:
    src = SyntheticSource(records=1_000, seed=4)
    assert payloads(src, 0, 2, 7) == payloads(src, 0, 2, 500)


def test_synthetic_instances_share_the_total_and_differ() -> None:
    src = SyntheticSource(records=1_001, seed=4)
    a, b = payloads(src, 0, 2, 100), payloads(src, 1, 2, 100)
    assert len(a) + len(b) == 1_001
    assert a[:10] != b[:10]


def test_rate_limited_source_emits_small_batches() -> None:
    chunks = list(SyntheticSource(records=500, rate=2_000).read(0, 1, 1024))
    assert max(len(c.payloads) for c in chunks) == 100  # 50 ms worth at 2,000/s


@pytest.mark.parametrize(("kw", "field"), [({"records": 0}, "records"), ({"rate": -1}, "rate"),
                                           ({"keys": 0}, "keys")])
def test_synthetic_rejects_bad_settings(kw: dict[str, int], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        SyntheticSource(**kw)  # type: ignore[arg-type]
    assert exc.value.field == field


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        JsonLinesSource(str(tmp_path / "nope.jsonl"))
