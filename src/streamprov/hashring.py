"""Consistent-hash ring that routes record keys to the instances of a stage.

Hashes are stable across processes and runs (no use of Python's salted ``hash``). Each member
owns ``vnodes`` points on a 64-bit ring; a key belongs to the first point at or after its hash.
Adding a member to N moves about 1/(N+1) of the keys, all of them to the new member.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

UInt64Array = npt.NDArray[np.uint64]
IntpArray = npt.NDArray[np.intp]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(values: npt.NDArray[Any]) -> UInt64Array:
    """splitmix64 finalizer, vectorized: spreads integers evenly over 64 bits."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _key_int(key: Any) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        return key & 0xFFFFFFFFFFFFFFFF
    if isinstance(key, str):
        data = key.encode()
    elif isinstance(key, bytes):
        data = key
    else:
        data = orjson.dumps(key, option=orjson.OPT_SORT_KEYS)
    return zlib.crc32(data) | (zlib.adler32(data) << 32)


_STRING_INTS: dict[str, int] = {}
"""``_key_int`` of string keys seen lately (keys repeat: a dictionary lookup is about a tenth
of hashing the key again). Only strings go in, so no key of another type can match one."""
_STRING_INTS_MAX = 1 << 16


def _cached_key_int(key: Any) -> int:
    if type(key) is not str:
        return _key_int(key)
    if len(_STRING_INTS) >= _STRING_INTS_MAX:
        _STRING_INTS.clear()
    value = _STRING_INTS[key] = _key_int(key)
    return value


def hash_keys(keys: Sequence[Any]) -> UInt64Array:
    """Stable 64-bit hashes of arbitrary JSON-compatible keys."""
    known = _STRING_INTS
    try:
        ints = [known[k] for k in keys]
    except (KeyError, TypeError):  # (a key not seen yet, or one that is not hashable)
        ints = [_cached_key_int(k) for k in keys]
    return mix64(np.array(ints, dtype=np.uint64))


def hash_ints(values: npt.NDArray[np.int64]) -> UInt64Array:
    return mix64(values)


class HashRing:
    """Immutable ring over member ids (small ints: instance slots)."""

    __slots__ = ("_members", "_owners", "_points", "name")

    def __init__(self, name: str, members: Iterable[int], vnodes: int = 128) -> None:
        self.name = name
        self._members = tuple(sorted(set(members)))
        if not self._members:
            raise ValueError("a ring needs at least one member")
        labels = [f"{name}/{m}/{v}" for m in self._members for v in range(vnodes)]
        points = hash_keys(labels)
        owners = np.repeat(np.array(self._members, dtype=np.intp), vnodes)
        order = np.argsort(points, kind="stable")
        self._points: UInt64Array = points[order]
        self._owners: IntpArray = owners[order]

    @property
    def members(self) -> tuple[int, ...]:
        return self._members

    def owners(self, hashes: UInt64Array) -> IntpArray:
        """Owning member for each hash."""
        if len(self._members) == 1:
            return np.full(len(hashes), self._members[0], dtype=np.intp)
        idx = np.searchsorted(self._points, hashes, side="left")
        idx[idx == len(self._points)] = 0
        return self._owners[idx]

    def owner(self, key: Any) -> int:
        return int(self.owners(hash_keys([key]))[0])
