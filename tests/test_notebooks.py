"""notebooks/walkthrough.ipynb runs top to bottom in a real Jupyter kernel (nbclient) against the stand-in
provider, and shows what its text promises: an instant re-run, a stats table, a chart, a cold run after
invalidation. The notebook is stored without outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="install the dev extra: pip install -e '.[dev]'")
nbclient = pytest.importorskip("nbclient", reason="install the dev extra: pip install -e '.[dev]'")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "walkthrough.ipynb"


def outputs(cell: Any) -> tuple[str, dict[str, Any]]:
    """(stream text, merged rich data) of one executed cell."""
    text, data = "", {}
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            text += out["text"]
        elif out["output_type"] in ("execute_result", "display_data"):
            data.update(out["data"])
    return text, data


def test_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_walkthrough_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTC_EXAMPLES_LATENCY", "0.01")  # the kernel inherits the environment
    monkeypatch.delenv("DTC_NOTEBOOK_MODEL", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders the charts
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    cells = [outputs(c) for c in nb.cells if c.cell_type == "code"]
    text = "".join(t for t, _ in cells)
    assert "cold: 4 questions" in text
    assert "warm: 4 questions" in text and "same answers as the cold run: True" in text
    assert "new generation: 1" in text and "after invalidation: 4 questions" in text
    assert "warm run" in text and "faster than cold" in text
    assert "exported 4 entries (4 with their request)" in text
    assert "fresh kernel, provider unreachable, same answers: True" in text
    assert "ReplayMiss: replay mode: this request was never recorded" in text and "Austria" in text
    html = [d["text/html"] for _, d in cells if "text/html" in d]
    assert html and "<table" in html[0] and "memory (l1)" in html[0]
    assert sum("image/png" in d for _, d in cells) == 2  # hits per tier, cold vs warm times
