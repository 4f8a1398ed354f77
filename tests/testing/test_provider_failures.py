"""The stand-in provider's switchable failure modes, over plain HTTP (the matrix that uses them is in
tests/integrations/test_provider_errors.py)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import pytest

from dspy_tiered_cache.testing.provider import StandInProvider

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def post(provider: StandInProvider, path: str, body: dict[str, Any], timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(provider.host, provider.port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("status", [500, 429, 503])
def test_status_until_recovered(provider: StandInProvider, status: int) -> None:
    provider.set_failure("status", status=status, retry_after_ms=5)
    assert provider.failure_mode == "status"
    for _ in range(2):
        code, body = post(provider, "/v1/chat/completions", CHAT)
        assert code == status and json.loads(body)["error"]["code"] == str(status)
    provider.recover()
    code, _ = post(provider, "/v1/chat/completions", CHAT)
    assert code == 200 and provider.request_count == 3


def test_hang_is_a_client_timeout_and_recover_releases_it(provider: StandInProvider) -> None:
    provider.set_failure("hang", hang_s=10.0)
    with pytest.raises(socket.timeout):
        post(provider, "/v1/chat/completions", CHAT, timeout=0.2)
    provider.recover()
    assert post(provider, "/v1/chat/completions", CHAT)[0] == 200


def test_refuse_closes_the_port_and_recover_reopens_it(provider: StandInProvider) -> None:
    port = provider.port
    provider.set_failure("refuse")
    with pytest.raises(ConnectionRefusedError):
        post(provider, "/v1/chat/completions", CHAT)
    provider.recover()
    assert provider.port == port and post(provider, "/v1/chat/completions", CHAT)[0] == 200


def test_midstream_cuts_the_answer(provider: StandInProvider) -> None:
    provider.set_failure("midstream")
    with pytest.raises(http.client.IncompleteRead):
        post(provider, "/v1/chat/completions", CHAT)
    provider.recover()
    assert post(provider, "/v1/chat/completions", CHAT)[0] == 200


def test_http_control_switches_a_provider_in_another_process(provider: StandInProvider) -> None:
    code, body = post(provider, "/control/failure", {"mode": "status", "status": 429})
    assert code == 200 and json.loads(body) == {"failure": "status"}
    assert post(provider, "/v1/chat/completions", CHAT)[0] == 429
    assert post(provider, "/control/recover", {})[0] == 200
    assert post(provider, "/v1/chat/completions", CHAT)[0] == 200
    assert post(provider, "/control/failure", {"mode": "refuse"})[0] == 400  # nobody could then say "recover"
    with pytest.raises(ValueError, match="failure mode"):
        provider.set_failure("explode")
