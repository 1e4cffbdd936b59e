"""How a ``Batch`` travels between Ray actors: numpy columns and one JSON blob.

Ray serializes numpy arrays out of band (no per-element pickling), so a batch whose ids,
branches and provenance are 2-D int64 arrays and whose payloads are one byte buffer plus
offsets moves several times faster than the same records as a list of dicts. Payloads are
encoded with orjson; a batch holding anything orjson would not give back as the same Python
value (datetimes, dataclasses, str/int subclasses, numpy values, non-string dict keys, ints
beyond 64 bits) travels pickled instead, so no payload changes type on the way. Known
exception: tuples and UUIDs/enums arrive as lists and strings, as they would after the stream
log (payloads are JSON documents there too).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from streamprov.runtime.batch import Batch, HopColumn, Int64Array

_STRICT = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
           | orjson.OPT_PASSTHROUGH_SUBCLASS)


@dataclass(slots=True)
class WireBatch:
    """A ``Batch`` as columns. ``ts_ns``/``logical`` have shape ``(hops, records)``."""

    stream_id: str
    replay_id: str
    record_ids: Int64Array
    node_ids: list[str]
    error_ns: list[int]
    ts_ns: Int64Array
    logical: Int64Array
    blob: npt.NDArray[np.uint8] | None
    offsets: Int64Array | None
    pickled: bytes | None
    keys: list[Any] | None
    branches: Int64Array | None

    def __len__(self) -> int:
        return len(self.record_ids)

    @classmethod
    def of(cls, batch: Batch) -> WireBatch:
        n = len(batch)
        blob: npt.NDArray[np.uint8] | None = None
        offsets: Int64Array | None = None
        pickled: bytes | None = None
        try:
            dumps = orjson.dumps
            parts = [dumps(p, option=_STRICT) for p in batch.payloads]
        except TypeError:
            pickled = pickle.dumps(batch.payloads, protocol=5)
        else:
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=n), out=offsets[1:])
            blob = np.frombuffer(b"".join(parts), dtype=np.uint8)
        hops = batch.hops
        if hops:
            ts = np.stack([h.ts_ns for h in hops])
            logical = np.stack([h.logical for h in hops])
        else:
            ts = logical = np.zeros((0, n), dtype=np.int64)
        return cls(batch.stream_id, batch.replay_id, batch.record_ids,
                   [h.node_id for h in hops], [h.error_ns for h in hops], ts, logical,
                   blob, offsets, pickled, batch.keys, batch.branches)

    def batch(self) -> Batch:
        if self.pickled is not None:
            payloads: list[Any] = pickle.loads(self.pickled)
        else:
            assert self.blob is not None
            assert self.offsets is not None
            loads = orjson.loads
            view = self.blob.data
            o = self.offsets.tolist()
            payloads = [loads(view[o[i] : o[i + 1]]) for i in range(len(o) - 1)]
        hops = [HopColumn(node, self.ts_ns[k], self.logical[k], err)
                for k, (node, err) in enumerate(zip(self.node_ids, self.error_ns, strict=True))]
        return Batch(self.stream_id, self.record_ids, payloads, self.keys, self.branches, hops,
                     self.replay_id)
