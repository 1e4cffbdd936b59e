"""A physical clock corrected in software from NTP measurements: ``OffsetFilter`` + ``SyncedClock``.

The model: ``reference = raw + offset(raw)`` with ``offset(raw) = offset_k + rate * (raw - mid_k)``
where ``(mid_k, offset_k)`` is the latest measurement (best of k exchanges) and ``rate`` is the
least-squares slope of the successive offsets in a window (``-rate`` is the raw clock's drift).

Error bound, kept honest rather than small: a measurement's true offset lies within
``offset +/- (delay/2 + server root distance)`` (the NTP guarantee); the slope's error is bounded
by the same half-widths propagated through the least-squares coefficients (assuming constant
drift over the window) plus a wander allowance. So at raw time ``r``::

    bound = half_width_k + read precision + rate_bound * |r - mid_k| + pending clock step

The system clock is never touched: the correction lives in this object only.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from streamprov.clock.physical import PhysicalClock, SystemClock

MAX_DRIFT_PPM = 500.0
"""Assumed bound on any clock's frequency error before it is measured (NTP's MAXFREQ)."""
WANDER_PPM = 1.0
"""Allowance for frequency change within the fit window (temperature, aging)."""
STEP_SLACK_NS = 100_000
STEP_SLACK_PPM = 1_000.0
"""A change of (raw - boot time) beyond 100 us + 1000 ppm of the elapsed time, once the
estimated drift is accounted for, is a clock step, not drift (kernel slewing stays <= 500 ppm)."""

_boot_ns: Callable[[], int]
if hasattr(time, "CLOCK_BOOTTIME"):
    # Boot time keeps counting through suspend, so a suspend is not mistaken for a step.
    _boot_ns = functools.partial(time.clock_gettime_ns, time.CLOCK_BOOTTIME)
else:  # pragma: no cover - non-Linux
    _boot_ns = time.monotonic_ns


@dataclass(frozen=True, slots=True)
class Sample:
    """One synchronization measurement: the best (smallest delay) of k exchanges.

    ``mid_ns`` is raw-clock time, ``offset_ns`` is reference minus raw, ``half_width_ns`` bounds
    ``|offset_ns - true offset|``. ``source`` identifies the server (a reset of the drift fit
    happens when it changes).
    """

    mid_ns: int
    offset_ns: int
    delay_ns: int
    half_width_ns: int
    source: int = 0
    stratum: int = 0
    root_delay_ns: int = 0

    def shifted(self, step_ns: int) -> Sample:
        """This sample as if the raw clock had always been ``step_ns`` ahead."""
        return Sample(self.mid_ns + step_ns, self.offset_ns - step_ns, self.delay_ns,
                      self.half_width_ns, self.source, self.stratum, self.root_delay_ns)


@dataclass(frozen=True, slots=True)
class Estimate:
    """The current correction model (see module docstring). ``rate`` and ``rate_bound`` are
    dimensionless (ns per ns); ``drift_ppm`` is the raw clock's frequency error (positive: the
    raw clock runs fast)."""

    anchor_ns: int
    offset_ns: int
    rate: float
    rate_bound: float
    half_width_ns: int
    delay_ns: int
    samples: int
    source: int
    stratum: int
    root_delay_ns: int
    reset: bool

    @property
    def drift_ppm(self) -> float:
        return -self.rate * 1e6

    def offset_at(self, raw_ns: int) -> int:
        return self.offset_ns + int(self.rate * (raw_ns - self.anchor_ns))

    def bound_at(self, raw_ns: int) -> int:
        return self.half_width_ns + int(self.rate_bound * abs(raw_ns - self.anchor_ns))


class OffsetFilter:
    """Turns successive ``Sample``s into an ``Estimate``. Not thread-safe (one writer).

    A sample inconsistent with the current model (the two error intervals do not overlap), or
    from another source, restarts the drift window; the previous rate is kept as the prior.
    """

    def __init__(self, window: int = 16, *, max_drift_ppm: float = MAX_DRIFT_PPM,
                 wander_ppm: float = WANDER_PPM) -> None:
        if window < 2:
            raise ValueError("window must be at least 2")
        self._samples: deque[Sample] = deque(maxlen=window)
        self._max_rate = max_drift_ppm * 1e-6
        self._wander = wander_ppm * 1e-6
        self._rate = 0.0
        self._rate_bound = self._max_rate
        self.estimate: Estimate | None = None
        self.resets = 0

    def add(self, sample: Sample) -> Estimate:
        reset = False
        est = self.estimate
        if est is not None:
            predicted = est.offset_at(sample.mid_ns)
            allowed = est.bound_at(sample.mid_ns) + sample.half_width_ns
            if sample.source != est.source or abs(sample.offset_ns - predicted) > allowed:
                self._samples.clear()
                self.resets += 1
                reset = True
        self._samples.append(sample)
        self._fit()
        self.estimate = Estimate(
            sample.mid_ns, sample.offset_ns, self._rate, self._rate_bound, sample.half_width_ns,
            sample.delay_ns, len(self._samples), sample.source, sample.stratum,
            sample.root_delay_ns, reset,
        )
        return self.estimate

    def shift(self, step_ns: int) -> None:
        """The raw clock stepped by ``step_ns``: move the history along with it."""
        self._samples = deque((s.shifted(step_ns) for s in self._samples),
                              maxlen=self._samples.maxlen)
        est = self.estimate
        if est is not None:
            self.estimate = Estimate(
                est.anchor_ns + step_ns, est.offset_ns - step_ns, est.rate, est.rate_bound,
                est.half_width_ns, est.delay_ns, est.samples, est.source, est.stratum,
                est.root_delay_ns, est.reset,
            )

    def _fit(self) -> None:
        n = len(self._samples)
        if n < 2:
            return
        last = self._samples[-1].mid_ns
        xs = [(s.mid_ns - last) * 1e-9 for s in self._samples]
        ys = [float(s.offset_ns) for s in self._samples]
        mx = sum(xs) / n
        my = sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx <= 0.0:
            return
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx  # ns/s
        # Worst case of the slope error when every sample is off by up to its half-width.
        err = sum(abs(x - mx) * s.half_width_ns for x, s in zip(xs, self._samples, strict=True))
        bound = (err / sxx) * 1e-9 + self._wander
        if bound >= self._max_rate + abs(self._rate):
            return  # too little spread yet to beat the prior
        rate = slope * 1e-9
        if abs(rate) > self._max_rate:
            rate = self._max_rate if rate > 0 else -self._max_rate
        self._rate, self._rate_bound = rate, bound


@dataclass(frozen=True, slots=True)
class _State:
    synced: bool
    anchor_ns: int
    offset_ns: int
    rate: float
    base_bound_ns: int
    rate_bound: float
    step_bound_ns: int
    gap_ref_ns: int
    boot_ref_ns: int


class SyncedClock:
    """A ``PhysicalClock`` corrected in software from synchronization samples.

    ``now_ns`` and ``error_bound_ns`` are lock-free reads of one immutable state (any thread,
    one clock read each, never blocking). Only one thread - the ``SyncClient`` that owns this
    clock - calls ``update`` and ``check_step``. Before the first sample the clock reads the raw
    clock and the bound is 0 ("no bound known", per ``PhysicalClock``).

    A step of the raw clock (its reading jumps against the boot-time clock) widens the bound by
    the step at once, wakes the sync thread (``on_step``), which moves the model along with the
    step and resynchronizes; the next successful sync clears the widening.
    """

    def __init__(self, raw: PhysicalClock | None = None, *, precision_ns: int | None = None,
                 window: int = 16) -> None:
        self.raw: PhysicalClock = raw if raw is not None else SystemClock()
        self._raw_now: Callable[[], int] = self.raw.now_ns
        if precision_ns is None:
            precision_ns = int(getattr(self.raw, "precision_ns", 0))
        self.precision_ns = precision_ns
        self._slack_ns = STEP_SLACK_NS + 2 * precision_ns
        self.filter = OffsetFilter(window)
        self.last_sample: Sample | None = None
        self.steps = 0
        self.on_step: Callable[[], None] | None = None
        gap, boot, _ = self._gap_sample()
        self._poll_gap, self._poll_boot = gap, boot
        self._state = _State(False, gap + boot, 0, 0.0, 0, 0.0, 0, gap, boot)

    # -- reading (any thread) ----------------------------------------------------------------

    def now_ns(self) -> int:
        raw = self._raw_now()
        s = self._state
        return raw + s.offset_ns + int(s.rate * (raw - s.anchor_ns))

    def correct(self, raw_ns: int) -> int:
        """The corrected time for a raw reading ``raw_ns`` (pure; for measuring residuals)."""
        s = self._state
        return raw_ns + s.offset_ns + int(s.rate * (raw_ns - s.anchor_ns))

    def at_host_ns(self, host_ns: int) -> int:
        """Corrected time at host time ``host_ns``; only when the raw clock can map host time
        (see ``streamprov.clock.timestamping``), else ``AttributeError``."""
        at: Callable[[int], int] = self.raw.at_host_ns  # type: ignore[attr-defined]
        return self.correct(at(host_ns))

    def error_bound_ns(self) -> int:
        s = self._state
        if not s.synced:
            return 0
        raw = self._raw_now()
        boot = _boot_ns()
        since = boot - s.boot_ref_ns
        bound = s.base_bound_ns + s.step_bound_ns + int(s.rate_bound * abs(raw - s.anchor_ns))
        dev = raw - boot - s.gap_ref_ns + s.rate * since
        if dev > self._slack_ns or -dev > self._slack_ns:  # cheap pre-check, then exact
            # Two back-to-back reads can be far apart on a busy host: confirm with a tight pair.
            gap, boot, width = self._gap_sample()
            since = boot - s.boot_ref_ns
            dev = gap - s.gap_ref_ns + s.rate * since
            if abs(dev) > self._slack(since) + width:
                bound += int(abs(dev))
                cb = self.on_step
                if cb is not None:
                    cb()
        return bound

    def _slack(self, since_ns: int) -> float:
        return STEP_SLACK_NS + 2 * self.precision_ns + STEP_SLACK_PPM * 1e-6 * abs(since_ns)

    def _gap_sample(self) -> tuple[int, int, int]:
        """``(raw - boot, boot, width)`` from the tightest of up to 3 bracketed reads: the
        gap is known to within ``width`` even when the thread is preempted between reads."""
        best = (0, 0, -1)
        for _ in range(3):
            b1 = _boot_ns()
            raw = self._raw_now()
            b2 = _boot_ns()
            width, mid = b2 - b1, (b1 + b2) // 2
            if best[2] < 0 or width < best[2]:
                best = (raw - mid, mid, width)
            if width < 20_000:
                break
        return best

    @property
    def synced(self) -> bool:
        return self._state.synced

    @property
    def estimate(self) -> Estimate | None:
        return self.filter.estimate

    @property
    def step_bound_ns(self) -> int:
        return self._state.step_bound_ns

    # -- updating (the sync thread only) -----------------------------------------------------

    def update(self, sample: Sample) -> Estimate:
        """Fold in a new measurement and publish the new correction."""
        self.check_step()
        est = self.filter.add(sample)
        self.last_sample = sample
        self._publish(est, step_bound_ns=0)
        return est

    def check_step(self) -> int:
        """Detect a step of the raw clock since the last check; if one happened, move the model
        with it (stamps stay continuous), widen the bound by it until the next sync, and
        return it (0 when none)."""
        gap, boot, width = self._gap_sample()
        since = boot - self._poll_boot
        dev = gap - self._poll_gap + int(self._state.rate * since)
        if abs(dev) <= self._slack(since) + width:
            if width < 20_000:
                self._poll_gap, self._poll_boot = gap, boot
            return 0
        self._poll_gap, self._poll_boot = gap, boot
        self.steps += 1
        self.filter.shift(dev)
        est = self.filter.estimate
        if est is not None:
            self._publish(est, step_bound_ns=self._state.step_bound_ns + abs(dev))
        else:
            s = self._state
            self._state = _State(s.synced, s.anchor_ns, s.offset_ns, s.rate, s.base_bound_ns,
                                 s.rate_bound, s.step_bound_ns, gap, boot)
        return dev

    def _publish(self, est: Estimate, *, step_bound_ns: int) -> None:
        gap, boot, _ = self._gap_sample()
        self._poll_gap, self._poll_boot = gap, boot
        self._state = _State(
            True, est.anchor_ns, est.offset_ns, est.rate,
            est.half_width_ns + self.precision_ns, est.rate_bound, step_bound_ns, gap, boot,
        )

