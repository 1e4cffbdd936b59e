"""One pipeline suite, two runners: the ``runner`` fixture gives ``LocalRunner`` or
``RayRunner`` (against one local Ray cluster per test session)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

RAY_CPUS = 8
"""Logical CPUs of the test cluster: more than the machine's cores, so a few fractional-CPU
actors per pipeline can be placed on a 2-core machine."""

RunnerFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local Ray cluster for the whole session: small object store, no dashboard."""
    ray = pytest.importorskip("ray")
    from streamprov.runtime.ray import ClusterOptions, connect

    temp = Path("/tmp") / f"sp-ray-{tmp_path_factory.getbasetemp().name}"
    # Ray's socket paths must stay short (107 bytes): a short temp dir beside pytest's
    options = ClusterOptions(num_cpus=RAY_CPUS, object_store_bytes=200 * 1024 * 1024,
                             temp_dir=temp)
    connect(options)
    yield options
    ray.shutdown()


def _make(kind: str, request: pytest.FixtureRequest) -> RunnerFactory:
    if kind == "local":
        from streamprov.runtime import LocalRunner

        return LocalRunner
    cluster = request.getfixturevalue("ray_cluster")
    from streamprov.runtime.ray import RayRunner

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("num_cpus", 0.5)
        return RayRunner(cluster=cluster, **kwargs)

    return make


@pytest.fixture(params=["local", "ray"])
def runner(request: pytest.FixtureRequest) -> RunnerFactory:
    """``runner(batch_size=..., queue_batches=...)`` builds the runner under test."""
    return _make(request.param, request)


@pytest.fixture
def ray_runner(request: pytest.FixtureRequest) -> RunnerFactory:
    return _make("ray", request)


def base_node(node_id: str) -> str:
    """A node id without the Ray runner's ``@<ray node>`` suffix."""
    return node_id.partition("@")[0]
