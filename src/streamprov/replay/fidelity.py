"""Digests that say whether a replay reproduced the original run.

Two 64-bit digests over a set of chains, both computed chunk by chunk in bounded memory:

* **outcomes**: order-independent sum of ``mix(record_id, branch, outcome)`` over every chain,
  so equal digests mean the same records ended the same way on the same branches (what the
  provenance store records of a run's output; payloads leaving a sink are not stored);
* **order**: sum of ``mix(record_id, position)`` over branch-0 chains in window order, so equal
  digests mean the records entered in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from streamprov.model import Outcome

_OUTCOME_CODE = {o.value: i + 1 for i, o in enumerate(Outcome)}
_MASK = (1 << 64) - 1


def outcome_codes(outcomes: pa.Array | pa.ChunkedArray | list[str]) -> npt.NDArray[np.uint64]:
    """Small integer per outcome name, vectorized over an Arrow string column."""
    arr = pa.array(outcomes, pa.string()) if isinstance(outcomes, list) else outcomes
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    enc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    table = np.array([_OUTCOME_CODE.get(str(o), 0) for o in enc.dictionary.to_pylist()] or [0],
                     dtype=np.uint64)
    codes: npt.NDArray[np.uint64] = table[
        enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
    return codes


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finalizer, element-wise (uint64 arithmetic wraps)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _sum(values: npt.NDArray[np.uint64]) -> int:
    return int(values.sum(dtype=np.uint64)) & _MASK if len(values) else 0


@dataclass(slots=True)
class Digest:
    """Running digests over chains fed in window order (see the module docstring)."""

    outcomes: int = 0
    order: int = 0
    chains: int = 0
    records: int = 0

    def add(self, record_ids: npt.NDArray[np.int64], branches: npt.NDArray[np.int64],
            outcomes: pa.Array | pa.ChunkedArray | list[str]) -> None:
        """Chains (one entry per chain, in window order) to fold in."""
        if not len(record_ids):
            return
        rid = record_ids.astype(np.uint64)
        br = branches.astype(np.uint64)
        oc = outcome_codes(outcomes)
        h = _mix(_mix(_mix(rid) ^ br) ^ oc)
        self.outcomes = (self.outcomes + _sum(h)) & _MASK
        main = branches == 0
        n = int(main.sum())
        pos = np.arange(self.records, self.records + n, dtype=np.uint64)
        self.order = (self.order + _sum(_mix(_mix(rid[main]) ^ pos))) & _MASK
        self.chains += len(record_ids)
        self.records += n

    def to_json(self) -> dict[str, object]:
        return {"outcomes": f"{self.outcomes:016x}", "order": f"{self.order:016x}",
                "chains": self.chains, "records": self.records}
