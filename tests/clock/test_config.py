from __future__ import annotations

import pickle

import pytest

from streamprov.clock import ClockConfig, SimulationParams, SkewPolicy
from streamprov.clock.config import (
    DEFAULT_MAX_SKEW_NS,
    parse_address,
    parse_duration_ns,
    parse_ppm,
    replica_name,
)
from streamprov.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "ns"),
    [("5ms", 5_000_000), ("-1.5us", -1_500), ("250ns", 250), ("2s", 2_000_000_000),
     ("20µs", 20_000), (" 3 ms ", 3_000_000), ("100", 100), (7, 7), (2.6, 3), ("1e3us", 1_000_000)],
)
def test_parse_duration(text: str | int | float, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "ms", "5 parsecs", "5m", "1..2ms", "abc", "--5ms"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_duration_ns(text, field="clock_offset")
    assert exc.value.field == "clock_offset"
    assert "clock_offset" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "ppm"),
    [("100ppm", 100.0), ("-50ppm", -50.0), ("500ppb", 0.5), ("0.01%", 100.0), (12, 12.0),
     ("3.5", 3.5)],
)
def test_parse_ppm(text: str | float, ppm: float) -> None:
    assert parse_ppm(text) == pytest.approx(ppm)


@pytest.mark.parametrize("text", ["100 furlongs", "ppm", "", "1e9ppm", True])
def test_parse_ppm_rejects(text: str | bool) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_ppm(text, field="clock_drift")
    assert exc.value.field == "clock_drift"


def test_parse_address() -> None:
    assert parse_address("10.0.0.1:123", 9) == ("10.0.0.1", 123)
    assert parse_address("time.example", 123) == ("time.example", 123)
    assert parse_address("[::1]:5000", 9) == ("::1", 5000)
    for bad in ("host:port", ":12", "h:70000", "[::1"):
        with pytest.raises(InvalidInput):
            parse_address(bad, 123)


def test_defaults_are_documented_values() -> None:
    cfg = ClockConfig.build()
    assert cfg.sync_interval_s == 1.0
    assert cfg.max_skew_ns == DEFAULT_MAX_SKEW_NS == 1_000_000
    assert cfg.policy is SkewPolicy.FLAG
    assert cfg.enabled
    assert cfg.addresses() == (("127.0.0.1", 12300), ("127.0.0.1", 12301), ("127.0.0.1", 12302))
    assert cfg.effective_timeout_s == 0.25


def test_strings_with_units_are_accepted() -> None:
    cfg = ClockConfig.build(max_skew_ns="250us", sync_interval_s="500ms", policy="hold",
                            upstream="ntp1:123, ntp2", simulate_default={"offset_ns": "5ms",
                                                                         "drift_ppm": "100ppm",
                                                                         "jitter_ns": "2us"})
    assert cfg.max_skew_ns == 250_000
    assert cfg.sync_interval_s == 0.5
    assert cfg.policy is SkewPolicy.HOLD
    assert cfg.upstream_addresses() == (("ntp1", 123), ("ntp2", 123))
    assert cfg.simulate_default == SimulationParams(offset_ns=5_000_000, drift_ppm=100.0,
                                                    jitter_ns=2_000)
    assert cfg.simulation_for("any/node") == cfg.simulate_default
    assert cfg.simulation_for(replica_name(0)) is None


@pytest.mark.parametrize(
    ("values", "field"),
    [({"policy": "drop"}, "policy"),
     ({"max_skew_ns": "fast"}, "max_skew_ns"),
     ({"max_skew_ns": 0}, "max_skew_ns"),
     ({"replicas": 0}, "replicas"),
     ({"sync_interval_s": 1.0, "timeout_s": 2.0}, "timeout_s"),
     ({"policy": "hold", "enabled": False}, "policy"),
     ({"replica_addresses": ["a:b"]}, "replica_addresses"),
     ({"upstream": ["x:99999"]}, "upstream"),
     ({"simulate": {"n": {"jitter_ns": "-1us"}}}, "simulate.n.jitter_ns"),
     ({"bogus": 1}, "bogus")],
)
def test_invalid_values_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        ClockConfig.build(**values)
    assert exc.value.field == field


def test_with_addresses_and_pickle() -> None:
    cfg = ClockConfig.build(base_port=0, replicas=2)
    assert cfg.addresses() == (("127.0.0.1", 0), ("127.0.0.1", 0))
    node_cfg = cfg.with_addresses([("127.0.0.1", 4000), ("::1", 4001)])
    assert node_cfg.addresses() == (("127.0.0.1", 4000), ("::1", 4001))
    assert node_cfg.replica_count == 2
    assert pickle.loads(pickle.dumps(node_cfg)) == node_cfg


def test_spread_simulation() -> None:
    cfg = ClockConfig.build().with_spread_simulation(["a", "b", "c"], "5ms", "100ppm", "1us")
    a, b, c = (cfg.simulate[n] for n in "abc")
    assert (a.offset_ns, b.offset_ns, c.offset_ns) == (5_000_000, 0, -5_000_000)
    assert (a.drift_ppm, b.drift_ppm, c.drift_ppm) == (-100.0, 0.0, 100.0)
    assert a.jitter_ns == 1_000
    one = ClockConfig.build().with_spread_simulation(["x"], "-2ms")
    assert one.simulate["x"].offset_ns == -2_000_000
    with pytest.raises(InvalidInput):
        ClockConfig.build().with_spread_simulation(["x"], "5 lightyears")
