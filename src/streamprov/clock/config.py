"""Configuration of the clock subsystem: one frozen, validated ``ClockConfig``.

Every value a user types (CLI flag, config file, API field) comes through here. Durations and
frequencies accept strings with units (``"5ms"``, ``"-1.5us"``, ``"100ppm"``) as well as plain
numbers (nanoseconds, ppm). Invalid values raise ``InvalidInput`` naming the field.

The config is picklable: a node process receives ``(config, node_id)`` and builds its own
``NodeClock`` from it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamprov.errors import InvalidInput

DEFAULT_BASE_PORT = 12300
DEFAULT_MAX_SKEW_NS = 1_000_000
"""1 ms. Why not the specification's +/-100 ns: that needs PTP with hardware timestamps. This
path is NTP in user-space Python over UDP; a node's error bound is half the best round trip
(25-60 us on loopback, 100-500 us on a LAN, more under a busy GIL), plus the replica's own
distance to the reference, plus drift since the last sync (a few us per second once drift is
estimated, 500 us/s before). 1 ms holds with a 10x margin on loopback and a LAN under load, and
is still well below the multi-millisecond skews that reorder streams."""

_DURATION_UNITS_NS = {
    "": 1, "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
}
_DURATION_RE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zµμ]*)\s*$")
_PPM_RE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(ppm|ppb|%)?\s*$")


def parse_duration_ns(value: str | int | float, *, field: str = "duration") -> int:
    """``"5ms"`` -> 5_000_000. Units: ns (default), us/µs, ms, s; sign and decimals allowed."""
    if isinstance(value, bool):
        raise InvalidInput(f"{field}: expected a duration like '5ms', got {value!r}", field=field)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInput(f"{field}: duration must be finite", field=field)
        return round(value)
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: expected a duration like '5ms', got {value!r}", field=field)
    m = _DURATION_RE.match(value.lower())
    if m is None or m.group(2) not in _DURATION_UNITS_NS:
        raise InvalidInput(
            f"{field}: cannot parse duration {value!r} (use e.g. '250ns', '20us', '5ms', '1s')",
            field=field,
        )
    return round(float(m.group(1)) * _DURATION_UNITS_NS[m.group(2)])


def parse_ppm(value: str | int | float, *, field: str = "drift") -> float:
    """``"100ppm"`` -> 100.0. Also ``"500ppb"``, ``"0.01%"``, or a plain number of ppm."""
    if isinstance(value, bool):
        raise InvalidInput(f"{field}: expected a drift like '100ppm', got {value!r}", field=field)
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        m = _PPM_RE.match(value.lower())
        if m is None:
            raise InvalidInput(
                f"{field}: cannot parse drift {value!r} (use e.g. '100ppm', '-50ppm')",
                field=field,
            )
        scale = {"ppb": 1e-3, "%": 1e4}.get(m.group(2) or "ppm", 1.0)
        out = float(m.group(1)) * scale
    else:
        raise InvalidInput(f"{field}: expected a drift like '100ppm', got {value!r}", field=field)
    if out != out or abs(out) > 100_000:
        raise InvalidInput(f"{field}: drift must be within +/-100000 ppm", field=field)
    return out


def parse_address(value: str, default_port: int, *, field: str = "address") -> tuple[str, int]:
    """``"host:port"``, ``"host"`` (default port) or ``"[v6]:port"`` -> ``(host, port)``."""
    text = value.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidInput(f"{field}: malformed address {value!r}", field=field)
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise InvalidInput(f"{field}: malformed address {value!r}", field=field)
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise InvalidInput(f"{field}: empty host in {value!r}", field=field)
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidInput(f"{field}: port of {value!r} is not a number", field=field) from None
    if not 0 <= port <= 65535:
        raise InvalidInput(f"{field}: port of {value!r} is out of range", field=field)
    return host, port


class SkewPolicy(enum.StrEnum):
    """What a node does while its error bound exceeds ``max_skew_ns``."""

    FLAG = "flag"
    """Keep stamping; the hop records the (too large) bound and the node is reported."""
    HOLD = "hold"
    """Stop accepting records until the bound is back within tolerance."""


class SimulationParams(BaseModel):
    """A simulated physical clock: ``true + offset + drift * elapsed + uniform(+/-jitter)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    offset_ns: int = 0
    drift_ppm: float = 0.0
    jitter_ns: int = Field(default=0, ge=0, le=1_000_000_000)
    seed: int | None = None

    @field_validator("offset_ns", mode="before")
    @classmethod
    def _offset(cls, v: Any) -> int:
        return parse_duration_ns(v, field="offset_ns")

    @field_validator("jitter_ns", mode="before")
    @classmethod
    def _jitter(cls, v: Any) -> int:
        return parse_duration_ns(v, field="jitter_ns")

    @field_validator("drift_ppm", mode="before")
    @classmethod
    def _drift(cls, v: Any) -> float:
        return parse_ppm(v, field="drift_ppm")


class ClockConfig(BaseModel):
    """Everything the timestamp service and the node clocks need. Frozen; build with ``build``.

    Replica addresses are ``replica_addresses`` when given, else ``host:base_port+i`` for
    ``i < replicas``; ``base_port=0`` makes every replica bind an ephemeral port (tests), and
    the nodes then need ``TimestampService.node_config()``, which carries the bound addresses.
    A replica's index is its position in that list: append new replicas at the end.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    """Synchronize node clocks at all. Off: nodes stamp with their raw clock, bound unknown (0)."""
    replicas: int = Field(default=3, ge=1, le=256)
    host: str = "127.0.0.1"
    base_port: int = Field(default=DEFAULT_BASE_PORT, ge=0, le=65535)
    replica_addresses: tuple[str, ...] | None = None
    vnodes: int = Field(default=64, ge=1, le=4096)
    sync_interval_s: float = Field(default=1.0, gt=0.0, le=3600.0)
    exchanges: int = Field(default=8, ge=1, le=64)
    """k: NTP exchanges per sync; the one with the smallest round-trip delay is kept."""
    timeout_s: float | None = Field(default=None, gt=0.0)
    """Wait for one reply; None = min(0.25 s, sync_interval_s / 4). Must be < sync_interval_s."""
    max_skew_ns: int = Field(default=DEFAULT_MAX_SKEW_NS, gt=0)
    policy: SkewPolicy = SkewPolicy.FLAG
    upstream: tuple[str, ...] = ()
    """Upstream NTP servers ``host[:port]`` (port 123 by default) the replicas discipline to."""
    rate_limit_per_s: float = Field(default=256.0, gt=0.0)
    """Requests per second answered per client address; the rest are dropped and counted."""
    rate_burst: int = Field(default=64, ge=1)
    simulate: dict[str, SimulationParams] = Field(default_factory=dict)
    """Simulated physical clocks by clock owner: a node id, or ``replica-<i>`` for a replica."""
    simulate_default: SimulationParams | None = None
    """Simulated clock for every node not in ``simulate`` (replicas are never defaulted)."""

    @field_validator("max_skew_ns", mode="before")
    @classmethod
    def _skew(cls, v: Any) -> int:
        return parse_duration_ns(v, field="max_skew_ns")

    @field_validator("sync_interval_s", "timeout_s", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> Any:
        if isinstance(v, str):
            return parse_duration_ns(v, field="sync_interval_s") / 1e9
        return v

    @field_validator("replica_addresses", "upstream", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return v

    @model_validator(mode="after")
    def _check(self) -> ClockConfig:
        if self.replica_addresses is not None:
            if not self.replica_addresses:
                raise InvalidInput("replica_addresses: empty list", field="replica_addresses")
            for a in self.replica_addresses:
                parse_address(a, self.base_port, field="replica_addresses")
        for a in self.upstream:
            parse_address(a, 123, field="upstream")
        if self.timeout_s is not None and self.timeout_s >= self.sync_interval_s:
            raise InvalidInput(
                "timeout_s must be shorter than sync_interval_s (failover within 2 intervals)",
                field="timeout_s",
            )
        if self.policy is SkewPolicy.HOLD and not self.enabled:
            raise InvalidInput(
                "policy 'hold' needs synchronization enabled (no bound is known without it)",
                field="policy",
            )
        if self.base_port and self.replica_addresses is None and (
            self.base_port + self.replicas - 1 > 65535
        ):
            raise InvalidInput("base_port + replicas exceeds 65535", field="base_port")
        return self

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def build(cls, **values: Any) -> ClockConfig:
        """Validate ``values``; any error becomes ``InvalidInput`` naming the field."""
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ()))
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, InvalidInput):
                raise InvalidInput(ctx_err.message, field=ctx_err.field or loc or None) from None
            raise InvalidInput(f"{loc or 'clock config'}: {err.get('msg')}", field=loc or None) \
                from None

    def replace(self, **changes: Any) -> ClockConfig:
        """A validated copy with ``changes`` (``InvalidInput`` naming the field if bad)."""
        return ClockConfig.build(**{**self.model_dump(), **changes})

    def with_addresses(self, addresses: Sequence[tuple[str, int]]) -> ClockConfig:
        """The same config with explicit replica addresses (what nodes need after port 0)."""
        return self.model_copy(update={
            "replica_addresses": tuple(_format_address(h, p) for h, p in addresses),
            "replicas": len(addresses),
        })

    def with_spread_simulation(
        self,
        node_ids: Sequence[str],
        offset: str | int = 0,
        drift: str | float = 0.0,
        jitter: str | int = 0,
        seed: int = 0,
    ) -> ClockConfig:
        """Simulated clocks for ``node_ids`` spread evenly over ``[-offset, +offset]`` and
        ``[-drift, +drift]`` (what ``demo --clock-offset 5ms --clock-drift 100ppm`` means).

        One node gets ``+offset``; two get ``+offset`` and ``-offset``; more are spread
        linearly, drift in the opposite direction so clocks cross over time.
        """
        off = parse_duration_ns(offset, field="clock_offset")
        dr = parse_ppm(drift, field="clock_drift")
        jit = parse_duration_ns(jitter, field="clock_jitter")
        if jit < 0:
            raise InvalidInput("clock_jitter must not be negative", field="clock_jitter")
        n = len(node_ids)
        sim = dict(self.simulate)
        for i, node in enumerate(node_ids):
            f = 1.0 if n == 1 else 1.0 - 2.0 * i / (n - 1)
            sim[node] = SimulationParams(
                offset_ns=round(off * f), drift_ppm=-dr * f, jitter_ns=jit, seed=seed + i
            )
        return self.model_copy(update={"simulate": sim})

    # -- derived values ----------------------------------------------------------------------

    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Replica addresses in index order (port 0 entries mean "ephemeral, not known yet")."""
        if self.replica_addresses is not None:
            return tuple(
                parse_address(a, self.base_port, field="replica_addresses")
                for a in self.replica_addresses
            )
        if self.base_port == 0:
            return tuple((self.host, 0) for _ in range(self.replicas))
        return tuple((self.host, self.base_port + i) for i in range(self.replicas))

    def upstream_addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(parse_address(a, 123, field="upstream") for a in self.upstream)

    @property
    def replica_count(self) -> int:
        return len(self.replica_addresses) if self.replica_addresses is not None else self.replicas

    @property
    def effective_timeout_s(self) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        return min(0.25, self.sync_interval_s / 4)

    def simulation_for(self, owner: str) -> SimulationParams | None:
        """Simulated clock parameters for a node id or ``replica-<i>``; None = real clock."""
        if owner in self.simulate:
            return self.simulate[owner]
        if owner.startswith("replica-"):
            return None
        return self.simulate_default


def replica_name(index: int) -> str:
    """The clock-owner name of replica ``index`` (key in ``ClockConfig.simulate``)."""
    return f"replica-{index}"


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def config_from_mapping(values: Mapping[str, Any]) -> ClockConfig:
    """``ClockConfig.build(**values)`` for a mapping (config file section)."""
    return ClockConfig.build(**dict(values))
