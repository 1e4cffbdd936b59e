"""Replicated clocks: replicas align to the leader, fail over, and run in their own process."""

from __future__ import annotations

from streamprov.clock import ClockConfig, ServiceProcess, TimestampService, probe_replicas

from .conftest import FAST, host_offset_excess_s, wait_for

MS = 1_000_000


def test_replicas_with_skewed_clocks_align_to_the_leader() -> None:
    cfg = ClockConfig.build(replicas=3, **FAST, simulate={
        "replica-1": {"offset_ns": "30ms", "drift_ppm": "80ppm"},
        "replica-2": {"offset_ns": "-20ms", "jitter_ns": "1us"},
    })
    with TimestampService(cfg) as svc:
        assert wait_for(lambda: all(s.syncs_ok >= 3 for s in svc.status()[1:]))
        st = svc.status()
        assert [s.role for s in st] == ["leader", "follower", "follower"]
        assert st[0].stratum == 10 and st[1].stratum == st[2].stratum == 11
        assert st[1].offset_ns is not None and abs(st[1].offset_ns + 30 * MS) < MS
        assert st[2].offset_ns is not None and abs(st[2].offset_ns - 20 * MS) < MS
        for address in svc.addresses:  # every replica serves the leader's (= host) time
            assert host_offset_excess_s(address) < 0.001


def test_when_the_leader_stops_the_next_replica_leads() -> None:
    cfg = ClockConfig.build(replicas=3, **FAST, simulate={"replica-1": {"offset_ns": "5ms"}})
    with TimestampService(cfg) as svc:
        assert wait_for(lambda: svc.status()[2].source == "replica-0")
        svc.stop_replica(0)
        assert wait_for(lambda: svc.status()[2].source == "replica-1")
        assert wait_for(lambda: svc.status()[1].role == "leader")  # holding over
        st = svc.status()
        assert not st[0].running
        assert host_offset_excess_s(svc.addresses[1]) < 0.001  # still close to the old leader
        assert host_offset_excess_s(svc.addresses[2]) < 0.001
        svc.start_replica(0)
        assert wait_for(lambda: [s.source for s in svc.status()] ==
                        [None, "replica-0", "replica-0"], timeout_s=10)
        assert svc.status()[0].running


def test_service_in_its_own_process() -> None:
    cfg = ClockConfig.build(replicas=2, **FAST)
    with ServiceProcess(cfg) as proc:
        assert len(proc.addresses) == 2
        assert all(port > 0 for _, port in proc.addresses)
        assert proc.node_config().addresses() == proc.addresses
        assert host_offset_excess_s(proc.addresses[1]) < 0.005
        assert wait_for(lambda: proc.status()[0].server["answered"] >= 1)
        st = proc.status()
        assert [s.index for s in st] == [0, 1]
        assert st[1].to_json()["role"] in {"leader", "follower"}


def test_probe_replicas_reports_reachable_and_dead(service: TimestampService) -> None:
    service.stop_replica(1)
    probes = probe_replicas(service.node_config(), timeout_s=0.2)
    assert [p.reachable for p in probes] == [True, False, True]
    assert probes[0].stratum == 10
    assert probes[0].offset_ns is not None and abs(probes[0].offset_ns) < 5_000_000
    assert probes[1].error is not None
    assert probes[2].to_json()["reachable"] is True
