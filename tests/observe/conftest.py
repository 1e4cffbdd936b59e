from __future__ import annotations

import pytest

from tests.observe.demo import Demo, build_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo(tmp_path_factory.getbasetemp())
