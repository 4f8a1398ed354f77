"""Recording files: export from the disk file or Redis, import anywhere, and every way a file can be wrong.

The cross-process replay through both doors is in tests/integrations/test_record_replay.py; here the entries come
from ``@cached`` functions, so no LLM is needed.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from dspy_tiered_cache import CacheCore, RecordingError, ReplayMiss, cached
from dspy_tiered_cache.cli import main
from dspy_tiered_cache.portable import read_recording


def summarize(text: str, model: str = "openai/gpt-4o-mini") -> dict[str, object]:
    """The cached function of these tests: one qualified name, so recorder and replayer share keys."""
    return {"model": model, "summary": text[:10], "usage": {"prompt_tokens": len(text), "completion_tokens": 3}}


def fill(core: CacheCore, n: int = 3, **options: object) -> list[str]:
    fn = cached(core=core, **options)(summarize)  # type: ignore[call-overload]
    texts = [f"text number {i} about caches" for i in range(n)]
    for text in texts:
        fn(text)
    core.flush()
    return texts


def replay_all(core: CacheCore, texts: list[str], **options: object) -> list[object]:
    fn = cached(core=core, **options)(summarize)  # type: ignore[call-overload]
    before = core.stats.snapshot()
    values = [fn(text) for text in texts]
    assert core.stats.snapshot().get("stores") == before.get("stores")  # served, never computed and stored
    return values


def test_disk_and_redis_exports_are_the_same_bytes(tmp_path: Path, redis_url: str) -> None:
    with CacheCore(disk_path=tmp_path / "a.sqlite3", record_requests=True) as disk_core:
        texts = fill(disk_core)
        disk_core.export(tmp_path / "disk.jsonl.gz")
    with CacheCore(redis_url=redis_url, record_requests=True, memory=False) as redis_core:
        summary = redis_core.import_(tmp_path / "disk.jsonl.gz")
        assert summary.entries == 3
        redis_core.export(tmp_path / "redis.jsonl.gz")
    assert (tmp_path / "redis.jsonl.gz").read_bytes() == (tmp_path / "disk.jsonl.gz").read_bytes()
    with CacheCore(redis_url=redis_url, memory=False, mode="replay") as replaying:
        assert [v["summary"] for v in replay_all(replaying, texts)] == [t[:10] for t in texts]  # type: ignore[index]


def test_import_uses_the_target_generation_and_namespace(tmp_path: Path) -> None:
    with CacheCore(disk_path=tmp_path / "a.sqlite3", record_requests=True, namespace="v1") as core:
        texts = fill(core)
        core.export(tmp_path / "v1.jsonl.gz")
    with CacheCore(disk_path=tmp_path / "b.sqlite3", mode="replay") as target:
        for _ in range(3):
            target.invalidate_namespace("v2")  # generation 3: keys must be rebuilt for it, not copied
        target.import_(tmp_path / "v1.jsonl.gz", namespace="v2")
        assert len(replay_all(target, texts, namespace="v2")) == 3
        with pytest.raises(ReplayMiss):
            replay_all(target, texts, namespace="v1")


def test_a_recording_made_under_another_key_secret_is_rekeyed_from_its_requests(tmp_path: Path) -> None:
    with CacheCore(disk_path=tmp_path / "a.sqlite3", record_requests=True, key_secret="secret-one-123456") as core:
        texts = fill(core)
        core.export(tmp_path / "with.jsonl.gz")
    with CacheCore(disk_path=tmp_path / "b.sqlite3", key_secret="secret-one-123456") as core:
        fill(core)  # no record_requests: the file has digests only
        core.export(tmp_path / "without.jsonl.gz")
    assert read_recording(tmp_path / "with.jsonl.gz").keying.startswith("hmac-sha256:")
    assert "secret-one" not in gzip.decompress((tmp_path / "with.jsonl.gz").read_bytes()).decode()
    with CacheCore(disk_path=tmp_path / "c.sqlite3", key_secret="secret-two-123456", mode="replay") as other:
        other.import_(tmp_path / "with.jsonl.gz")
        assert len(replay_all(other, texts)) == 3
        with pytest.raises(RecordingError, match="same DSPY_TIERED_CACHE_KEY_SECRET"):
            other.import_(tmp_path / "without.jsonl.gz")


def test_endpoints_kept_in_keys_are_not_exported(tmp_path: Path) -> None:
    with CacheCore(disk_path=tmp_path / "a.sqlite3", record_requests=True, include_api_base=True) as core:
        key = core.key_for({"model": "m", "messages": [], "__api_base__": "https://llm.internal.example/v1"})
        core.set(key, {"answer": 1})
        core.export(tmp_path / "r.jsonl.gz")
    text = gzip.decompress((tmp_path / "r.jsonl.gz").read_bytes()).decode()
    assert "llm.internal.example" not in text and '"request_redacted":true' in text
    with CacheCore(disk_path=tmp_path / "b.sqlite3", include_api_base=True, mode="replay") as other:
        other.import_(tmp_path / "r.jsonl.gz")  # same keying: the recorded digest is used as it is
        assert other.get(key) is not None


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda raw: b"PK\x03\x04 not a recording at all", "not gzip data"),
        (lambda raw: raw[: len(raw) // 2], "damaged or truncated"),
        (lambda raw: gzip.compress(b"\n".join(gzip.decompress(raw).splitlines()[:-1])), "announces 3 entries"),
        (lambda raw: gzip.compress(b'{"format": "something else"}\n'), "not a header"),
        (lambda raw: gzip.compress(gzip.decompress(raw).replace(b'"version":1', b'"version":9')), "version 9"),
        (lambda raw: gzip.compress(gzip.decompress(raw) + b"{oops\n"), "line 5 is not JSON"),
    ],
    ids=["garbage", "truncated", "missing-line", "foreign", "future-version", "bad-line"],
)
def test_a_bad_file_is_one_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: object, problem: str
) -> None:
    with CacheCore(disk_path=tmp_path / "a.sqlite3") as core:
        fill(core)
        core.export(tmp_path / "good.jsonl.gz")
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(damage((tmp_path / "good.jsonl.gz").read_bytes()))  # type: ignore[operator]
    target = tmp_path / "target.sqlite3"
    code = main(["--disk-path", str(target), "import", str(bad)])
    err = capsys.readouterr().err
    assert code == 1 and problem in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not target.exists()  # validated before the cache was even opened
    with pytest.raises(RecordingError, match=problem), CacheCore(disk_path=target) as core:
        core.import_(bad)


def test_cli_export_import_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "a.sqlite3"
    with CacheCore(disk_path=source, record_requests=True, namespace="notes") as core:
        fill(core, 2)
    out = tmp_path / "notes.jsonl.gz"
    assert main(["--disk-path", str(source), "export", "-o", str(out)]) == 1  # namespace "default" is empty
    assert "nothing to export" in capsys.readouterr().err and not out.exists()
    assert main(["--disk-path", str(source), "--namespace", "notes", "export", "-o", str(out)]) == 0
    assert "exported 2 entries (2 with their request)" in capsys.readouterr().out
    assert main(["--disk-path", str(source), "export", "--all", "-o", str(tmp_path / "all.jsonl.gz")]) == 0
    assert (tmp_path / "all.jsonl.gz").read_bytes() == out.read_bytes()
    capsys.readouterr()
    assert main(["inspect", str(out), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["entries"]
    assert [r["tokens"] for r in rows] and all(r["tokens"] == 29 for r in rows)  # 26 prompt + 3 completion
    assert sorted(r["request"] for r in rows) == [  # the first 60 characters of the request
        '{"model":"openai/gpt-4o-mini","text":"text number 0 about ca',
        '{"model":"openai/gpt-4o-mini","text":"text number 1 about ca',
    ]
    assert main(["inspect", str(out)]) == 0
    table = capsys.readouterr().out
    assert "request (first words)" in table and "age" in table
    target = tmp_path / "b.sqlite3"
    assert main(["--disk-path", str(target), "--namespace", "renamed", "import", str(out)]) == 0
    assert "imported 2 entries into namespace(s) renamed" in capsys.readouterr().out
    assert main(["--disk-path", str(target), "--namespace", "renamed", "export", "-o", str(tmp_path / "x.gz")]) == 0


@pytest.mark.parametrize("below", ["x.jsonl.gz", "a/b/x.jsonl.gz"])
def test_an_output_path_through_a_file_names_that_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], below: str
) -> None:
    source = tmp_path / "a.sqlite3"
    with CacheCore(disk_path=source) as core:
        fill(core)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory")
    assert main(["--disk-path", str(source), "export", "-o", str(a_file / below)]) == 1
    err = capsys.readouterr().err
    assert f"{a_file} is a file, not a directory" in err and "File exists" not in err
    assert err.count("\n") == 1 and "Traceback" not in err
