"""Access control: the bearer token on mutating requests (and reads with protect_reads), where
the token comes from, and ``serve`` refusing a non-loopback address without one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from streamprov.api import create_app
from streamprov.api.auth import TOKEN_ENV, is_loopback, resolve_token
from streamprov.app import App, Settings, replay_engine
from streamprov.config import ServeSection
from streamprov.errors import InvalidInput
from tests.api.test_api import free_port, through_asgi
from tests.replay.streams import catalog_for_tests
from tests.test_cli import cli

TOKEN = "s3cret-token-for-tests-0123456789"
CONFIG = {"nodes": 1, "nodeType": "small", "batchSize": 64}


def build(data_dir: Path, *, protect_reads: bool = False, token: str | None = TOKEN) -> FastAPI:
    app = App(Settings.resolve(data_dir))
    catalog = catalog_for_tests(data_dir)
    return create_app(app, catalog, replay_engine(app, catalog),
                      served={"payments": "streamprov.examples.passthrough:pipeline"},
                      serve=ServeSection(protect_reads=protect_reads), api_token=token)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_changes_need_the_token_reads_stay_open(tmp_path: Path) -> None:
    api = build(tmp_path / "data")

    async def go(client: httpx.AsyncClient) -> list[httpx.Response]:
        seen = []
        res = await client.put("/configurations/guarded", json=CONFIG)
        assert res.status_code == 401, res.text
        assert res.headers["www-authenticate"].startswith("Bearer")
        assert res.json()["error"]["field"] == "Authorization"
        seen.append(res)
        for header in ({"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"},
                       {"Authorization": TOKEN}):
            res = await client.put("/configurations/guarded", json=CONFIG, headers=header)
            assert res.status_code == 401, (header, res.text)
            seen.append(res)
        res = await client.put("/configurations/guarded", json=CONFIG,
                               headers=bearer(TOKEN[:-1] + "x"))
        assert res.status_code == 403, res.text
        assert res.json()["error"]["type"] == "Forbidden"
        seen.append(res)
        # nothing was stored by the refused requests
        assert (await client.get("/configurations/guarded")).status_code == 404
        res = await client.put("/configurations/guarded", json=CONFIG, headers=bearer())
        assert res.status_code == 201, res.text
        # every kind of change is guarded, before its body or ids are even looked at
        for method, path in (("POST", "/replay"), ("POST", "/tune"),
                             ("DELETE", "/replay/r-x"), ("PUT", "/replay/r-x/configuration"),
                             ("PUT", "/node-types/gpu"), ("DELETE", "/tune/t-x"),
                             ("POST", "/streams/payments/records")):
            res = await client.request(method, path, json={})
            assert res.status_code == 401, (method, path, res.text)
            seen.append(res)
        res = await client.post("/streams/payments/records", json=[{"a": 1}],
                                headers=bearer())
        assert res.status_code == 200 and res.json()["records"] == 1, res.text
        # reads, the dashboard and its assets stay open
        for path in ("/healthz", "/streams", "/configurations/guarded", "/ui", "/ui/replay",
                     "/ui/static/dashboard.js", "/metrics", "/openapi.json"):
            res = await client.get(path)
            assert res.status_code == 200, (path, res.text)
        return seen

    for res in through_asgi(api, go):
        assert TOKEN not in res.text and TOKEN[:8] not in str(res.headers)


def test_protect_reads_guards_everything_but_healthz(tmp_path: Path) -> None:
    api = build(tmp_path / "data", protect_reads=True)

    async def go(client: httpx.AsyncClient) -> None:
        assert (await client.get("/healthz")).status_code == 200
        for path in ("/streams", "/configurations", "/ui", "/metrics", "/openapi.json",
                     "/replays"):
            res = await client.get(path)
            assert res.status_code == 401, (path, res.text)
            res = await client.get(path, headers=bearer("wrong-token-0123456789"))
            assert res.status_code == 403, (path, res.text)
            res = await client.get(path, headers=bearer())
            assert res.status_code == 200, (path, res.text)

    through_asgi(api, go)


def test_openapi_declares_the_scheme_on_guarded_operations(tmp_path: Path) -> None:
    def security(doc: dict[str, Any], method: str, path: str) -> Any:
        return doc["paths"][path][method].get("security")

    doc = build(tmp_path / "a").openapi()
    assert doc["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"][
            "securitySchemes"]["bearerToken"]["description"]}
    assert security(doc, "post", "/replay") == [{"bearerToken": []}]
    assert security(doc, "put", "/configurations/{configurationId}") == [{"bearerToken": []}]
    assert set(doc["paths"]["/replay"]["post"]["responses"]) >= {"401", "403"}
    assert security(doc, "get", "/streams") is None
    assert security(doc, "get", "/healthz") is None
    doc = build(tmp_path / "b", protect_reads=True).openapi()
    assert security(doc, "get", "/streams") == [{"bearerToken": []}]
    assert security(doc, "get", "/healthz") is None
    doc = build(tmp_path / "c", token=None).openapi()
    assert "securitySchemes" not in doc["components"]
    assert security(doc, "post", "/replay") is None


def test_no_token_configured_leaves_the_api_open(tmp_path: Path) -> None:
    api = build(tmp_path / "data", token=None)

    async def go(client: httpx.AsyncClient) -> int:
        return (await client.put("/configurations/open", json=CONFIG)).status_code

    assert through_asgi(api, go) == 201


def test_where_the_token_comes_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    flag = tmp_path / "flag-token"
    flag.write_text(f"  {TOKEN}-flag\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "toml-token").write_text(f"{TOKEN}-toml")
    assert resolve_token(None, None, tmp_path) is None
    assert resolve_token(None, "toml-token", tmp_path / "conf") == f"{TOKEN}-toml"
    monkeypatch.setenv(TOKEN_ENV, f"{TOKEN}-env")
    assert resolve_token(None, "toml-token", tmp_path / "conf") == f"{TOKEN}-env"
    assert resolve_token(flag, "toml-token", tmp_path / "conf") == f"{TOKEN}-flag"
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(InvalidInput, match="at least 16") as exc:
        resolve_token(None, None, None)
    assert "short" not in str(exc.value)
    with pytest.raises(InvalidInput, match="no-such-file"):
        resolve_token(tmp_path / "no-such-file", None, None)
    flag.write_text("with spaces inside the token text")
    with pytest.raises(InvalidInput, match="printable ASCII") as exc:
        resolve_token(flag, None, None)
    assert "spaces inside" not in str(exc.value)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
    ("example.org", False)])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_refuses_a_public_address_without_a_token(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    data = str(tmp_path / "data")
    code, _, err = cli(capsys, "serve", "--host", "0.0.0.0", "--data-dir", data)
    assert code == 2
    assert err.count("\n") == 1 and "loopback" in err and "--api-token-file" in err
    assert "Traceback" not in err
    code, _, err = cli(capsys, "serve", "--protect-reads", "--data-dir", data)
    assert code == 2 and err.count("\n") == 1 and "--protect-reads" in err
    short = tmp_path / "token"
    short.write_text("tooshort")
    code, _, err = cli(capsys, "serve", "--host", "0.0.0.0", "--api-token-file", str(short),
                       "--data-dir", data)
    assert code == 2 and err.count("\n") == 1 and "tooshort" not in err
    # the TOML names a token file that is missing: refused the same way
    (tmp_path / "streamprov.toml").write_text('[serve]\napi_token_file = "missing"\n')
    code, _, err = cli(capsys, "serve", "--host", "0.0.0.0", "--data-dir", data)
    assert code == 2 and err.count("\n") == 1 and "missing" in err


def test_real_server_with_a_token(tmp_path: Path) -> None:
    """``streamprov serve`` as users start it, with a token file, on a loopback port."""
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamprov.cli", "serve", "--port", str(port),
         "--api-token-file", str(token_file), "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base, timeout=10) as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
            assert client.get("/configurations").status_code == 200
            res = client.put("/configurations/real", json=CONFIG)
            assert res.status_code == 401 and res.headers["www-authenticate"].startswith(
                "Bearer")
            assert client.put("/configurations/real", json=CONFIG,
                              headers=bearer()).status_code == 201
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert TOKEN not in err
    assert "changes need the API token" in " ".join(err.split())  # the console wraps
