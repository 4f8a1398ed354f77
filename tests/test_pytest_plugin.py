"""The pytest plugin as a user meets it: examples/recorded_program's tests in their own pytest processes.

Replay of the committed recording passes with the provider unreachable; a changed prompt fails with the
ReplayMiss message and the hint to record; ``--llm-cache=record`` adds the new prompt to the recording.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dspy_tiered_cache.portable import inspect_recording

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "recorded_program"


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPY_TIERED_CACHE_", "DTC_EXAMPLE_"))}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(folder), str(folder), *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_committed_recording_replays() -> None:
    result = run_pytest(EXAMPLE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout


def test_a_changed_prompt_fails_in_replay_and_record_adds_it(tmp_path: Path) -> None:
    folder = tmp_path / "recorded_program"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    test_file = folder / "test_qa_program.py"
    source = test_file.read_text()
    assert 'TERMS = ["cache stampede", "TTL"]' in source
    test_file.write_text(source.replace('TERMS = ["cache stampede", "TTL"]', 'TERMS = ["cache stampedes", "TTL"]'))
    recording = folder / "recordings" / "test_qa_program.jsonl.gz"
    before = recording.read_bytes()

    replayed = run_pytest(folder)
    assert replayed.returncode == 1
    assert "2 failed, 1 passed" in replayed.stdout
    assert "ReplayMiss: replay mode: this request was never recorded (model openai/gpt-4o-mini" in replayed.stdout
    assert "(recorded: '...term ## ]] cache stampede Respond with...')" in replayed.stdout
    assert "record new calls with: pytest --llm-cache=record" in replayed.stdout
    assert recording.read_bytes() == before  # replay never writes the recording

    recorded = run_pytest(folder, "--llm-cache=record")
    assert recorded.returncode == 0, recorded.stdout[-3000:]
    terms = sorted(" ".join((r["request"] or "").split()[5:7]) for r in inspect_recording(recording))
    assert terms == ["TTL Respond", "cache stampede", "cache stampedes"]  # kept the old, added the new
