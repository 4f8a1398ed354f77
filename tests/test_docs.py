"""The README and docs/ stay true: short, every link resolves, the commands CI runs are the ones shown, and the
README's stand-in provider script runs as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dspy_tiered_cache.settings import ENV_PREFIX, CacheSettings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/python -m pytest"
DEMO_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/dspy-tiered-cache demo"


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines; move reference material to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # an absolute URL (http:, mailto:)
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no {resolved.relative_to(ROOT)})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{page.name}: broken links: {broken}"


def test_readme_links_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in text and not p.name.startswith("compatibility-")]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_readme_shows_the_commands_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace("pip install -q ", "pip install ")  # quieter
    assert TEST_COMMAND in ci
    assert TEST_COMMAND in text and DEMO_COMMAND in text
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in text


def test_configuration_page_names_every_setting() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [f for f in CacheSettings.model_fields if f"`{ENV_PREFIX}{f.upper()}`" not in text]
    # A few rows name a pair: `..._REDIS_TTL` / `..._DISK_TTL`.
    missing = [f for f in missing if f"`..._{f.upper()}`" not in text]
    assert not missing, f"docs/configuration.md does not describe: {missing}"


def test_docs_are_written_for_users_not_as_a_log() -> None:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\(issue \d+\)|\bissue #?\d+|\bsince issue\b", text, flags=re.I), page.name


def test_the_readme_stand_in_provider_script_runs_as_printed(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Offline, and the stand-in provider") :]
    script = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert script is not None
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}  # the script sets it
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    done = subprocess.run(
        [sys.executable, "-c", script.group(1)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("1 None ") and lines[1].startswith("2 True "), done.stdout
    assert lines[-1] == "requests the provider received: 1"
    assert "cost map" not in done.stderr  # no price-map download was tried
