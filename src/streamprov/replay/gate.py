"""Who may open the embedded stores, inside one process.

A DuckDB file admits one process at a time, and a running deployment's writer process holds
the provenance store. A ``StoreGate`` orders the uses in a long-running process (the API
server): reads share it, a deployment (replay, ingest) holds it exclusively for its whole run.
A read that cannot get in within ``wait_s`` fails with ``StoreBusy`` (the API's 503 with
``Retry-After``) instead of hanging. The thread holding it exclusively may read too.
For backends with many writers (PostgreSQL) the gate is open: every call passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from streamprov.replay.errors import StoreBusy


class StoreGate:
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._cond = threading.Condition()
        self._readers = 0
        self._owner: int | None = None
        self.holder = ""
        """What holds the gate exclusively (for messages)."""

    @contextmanager
    def shared(self, wait_s: float = 1.0) -> Iterator[None]:
        if not self.enabled or self._owner == threading.get_ident():
            yield
            return
        deadline = time.monotonic() + wait_s
        with self._cond:
            while self._owner is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreBusy(f"the stores are in use by {self.holder or 'a deployment'};"
                                    " embedded DuckDB stores admit one process at a time, "
                                    "try again when it has finished")
                self._cond.wait(left)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self, holder: str, wait_s: float = 30.0) -> Iterator[None]:
        if not self.enabled or self._owner == threading.get_ident():
            yield
            return
        deadline = time.monotonic() + wait_s
        with self._cond:
            while self._owner is not None or self._readers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreBusy(f"the stores are in use by {self.holder or 'a deployment'}")
                self._cond.wait(left)
            self._owner = threading.get_ident()
            self.holder = holder
        try:
            yield
        finally:
            with self._cond:
                self._owner = None
                self.holder = ""
                self._cond.notify_all()
