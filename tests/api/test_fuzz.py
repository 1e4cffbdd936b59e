"""Every operation of the OpenAPI document, fuzzed with schemathesis: no 5xx, and every answer
(status, content type, headers, body) is one the document describes.

The app runs with an API token (sent with every case; schemathesis also checks that a guarded
operation refuses a request without it) over a copy of the recorded stream whose pipeline
registry is gone: replay and tuning submissions are validated in full and then refused (404)
instead of starting. A running replay holds the embedded stores, and reads during it would
wait and answer 503; the replay lifecycle and its 429 are tested in test_api and test_limits.
Examples are bounded and derived deterministically, so the run is short and repeatable.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from streamprov.api import create_app
from streamprov.app import App, Settings, replay_engine
from tests.api.test_api import body, through_asgi
from tests.replay.streams import Recorded, catalog_for_tests

TOKEN = "fuzz-token-0123456789abcdef"
EXAMPLES = 30

Operation = schemathesis.APIOperation[Any, Any, Any, Any]


@pytest.fixture(scope="module")
def fuzz_api(api_recorded: Recorded, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[FastAPI]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    shutil.copytree(api_recorded.data_dir, data_dir,
                    ignore=shutil.ignore_patterns("*.wal", "*.tmp"))
    (data_dir / "pipelines.json").unlink()
    app = App(Settings.resolve(data_dir))
    catalog = catalog_for_tests(data_dir)
    engine = replay_engine(app, catalog)
    api = create_app(app, catalog, engine, api_token=TOKEN)
    yield api
    engine.close(timeout_s=30)
    app.close()


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_api: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_api)


def fuzz(operation: Operation, mode: GenerationMode) -> None:
    """Up to ``EXAMPLES`` cases of ``operation``; raises what the first failing case raised."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    def run(case: schemathesis.Case[Operation]) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                               excluded_checks=[positive_data_acceptance])

    run()


def describe(exc: BaseException) -> str:
    """The failure and what it wraps (a flaky failure holds the first one)."""
    text = str(exc)
    if isinstance(exc, BaseExceptionGroup):
        text += "".join(f"\n  - {describe(e)}" for e in exc.exceptions)
    return text[:3000]


# schemathesis's negative strategies draw from `random`, which Hypothesis seeds per example
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(fuzz_schema: schemathesis.BaseSchema,
                                               mode: GenerationMode) -> None:
    failures: dict[str, str] = {}
    operations: list[Operation] = []
    for result in fuzz_schema.get_all_operations():
        assert isinstance(result, Ok), describe(result.err())
        operations.append(result.ok())
    assert len(operations) > 20
    for operation in operations:
        try:
            fuzz(operation, mode)
        except Unsatisfiable:  # no input that breaks the schema (no parameters, any string)
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (Exception, FailureGroup) as exc:  # try all, report every failure
            failures[operation.label] = describe(exc)
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())


def test_the_fuzzed_app_starts_nothing(fuzz_api: FastAPI, api_recorded: Recorded) -> None:
    """What keeps the fuzz run cheap holds: a valid replay request is refused, not started."""

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/replay", headers={"Authorization": f"Bearer {TOKEN}"},
                                 json=body(api_recorded))

    res = through_asgi(fuzz_api, go)
    assert res.status_code == 404, res.text
    assert res.json()["error"]["field"] == "streamId"
