from __future__ import annotations

import multiprocessing as mp
import os
import time

from streamprov.metrics import ResourceSampler
from streamprov.metrics.resources import machine_cpus


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_samples_cpu_and_rss_and_pins() -> None:
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_busy, args=(1.5,))
    proc.start()
    try:
        assert proc.pid is not None
        pid = proc.pid
        sampler = ResourceSampler(lambda: {"busy-0": pid, "me": os.getpid()},
                                  interval_s=0.1, pin_cpus=1).start()
        time.sleep(1.0)
        usage = sampler.stop()
    finally:
        proc.join(10)
    busy = usage["busy-0"]
    assert busy.samples >= 3
    assert busy.cpu_percent_max > 20
    assert busy.rss_bytes_max > 1 << 20
    doc = busy.to_json(1 << 30)
    assert 0 < doc["memoryUtilization"] < 1
    if len(machine_cpus()) > 1:
        assert doc["cpuAffinity"] and len(doc["cpuAffinity"]) == 1
