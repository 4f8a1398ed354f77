"""The stand-in provider's transcription, rerank, Responses and Anthropic messages endpoints, over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx

from dspy_tiered_cache.testing.provider import StandInProvider


def _events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of a server-sent event stream."""
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def _transcribe(provider: StandInProvider, name: str, audio: bytes, **fields: str) -> httpx.Response:
    return httpx.post(f"{provider.base_url}/audio/transcriptions", data={"model": "whisper-1", **fields},
                      files={"file": (name, audio, "audio/wav")})  # fmt: skip


def test_transcription_depends_on_the_audio_bytes_not_the_name(provider: StandInProvider) -> None:
    one = _transcribe(provider, "audio.wav", b"RIFF one").json()
    two = _transcribe(provider, "audio.wav", b"RIFF two").json()
    renamed = _transcribe(provider, "other.wav", b"RIFF one").json()
    assert one["text"] != two["text"]
    assert renamed["text"] == one["text"]
    assert one["usage"]["type"] == "duration"
    assert (
        _transcribe(provider, "a.wav", b"RIFF", response_format="text").text
        == _transcribe(provider, "b.wav", b"RIFF").json()["text"]
    )
    assert provider.count("transcriptions") == 5
    assert provider.requests_for("transcriptions")[0]["files"] == {"file": ["audio.wav", 8]}  # no bytes recorded


def test_rerank_scores_every_document_in_cohere_format(provider: StandInProvider) -> None:
    body = {"model": "rerank-english-v3.0", "query": "q", "documents": ["a", "b", "c"], "top_n": 2}
    answer = httpx.post(f"{provider.url}/v2/rerank", json=body).json()
    assert len(answer["results"]) == 2
    scores = [r["relevance_score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    assert answer == {**answer, "results": httpx.post(f"{provider.url}/v1/rerank", json=body).json()["results"]}
    assert provider.count("rerank") == 2


def test_responses_stream_ends_in_the_same_response_as_the_plain_answer(provider: StandInProvider) -> None:
    body = {"model": "gpt-4o-mini", "input": "hello", "previous_response_id": "resp_1"}
    plain = httpx.post(f"{provider.base_url}/responses", json=body).json()
    streamed = _events(httpx.post(f"{provider.base_url}/responses", json={**body, "stream": True}).text)
    names = [name for name, _ in streamed]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert [data["sequence_number"] for _, data in streamed] == list(range(len(streamed)))
    text = "".join(data["delta"] for name, data in streamed if name == "response.output_text.delta")
    final = streamed[-1][1]["response"]
    assert text == final["output"][0]["content"][0]["text"] == plain["output"][0]["content"][0]["text"]
    assert final["previous_response_id"] == "resp_1"
    other = httpx.post(f"{provider.base_url}/responses", json={**body, "previous_response_id": "resp_2"}).json()
    assert other["output"][0]["content"][0]["text"] != text


def test_anthropic_messages_plain_and_streamed(provider: StandInProvider) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
    plain = httpx.post(f"{provider.url}/v1/messages", json=body).json()
    assert plain["type"] == "message"
    streamed = _events(httpx.post(f"{provider.url}/v1/messages", json={**body, "stream": True}).text)
    assert [name for name, _ in streamed][:2] == ["message_start", "content_block_start"]
    assert streamed[-1][0] == "message_stop"
    text = "".join(data["delta"]["text"] for name, data in streamed if name == "content_block_delta")
    assert text == plain["content"][0]["text"]
    missing = httpx.post(f"{provider.url}/v1/messages", json={"messages": body["messages"]})
    assert missing.status_code == 400
    assert provider.count("messages") == 3
