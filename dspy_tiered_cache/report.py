"""A readable picture of a cache's counters: a text table, an HTML table for notebooks, a bar chart.

:class:`~dspy_tiered_cache.stats.Stats` is built for the hot path (plain counters, one lock); people reading the
numbers want something else: which tier served how much, how fast, and what it saved. :class:`StatsReport` is a
frozen snapshot of those counters with the renderings Jupyter and a terminal look for (``_repr_html_``,
``__repr__``), so ``report(lm)`` as the last line of a notebook cell shows a table instead of a nested dict.

A report is a snapshot, not a live view: take a new one to see new calls. Counters are per process; what the
shared tiers hold is shown by ``dspy-tiered-cache stats``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dspy_tiered_cache import hooks
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.fleet import read_fleet
from dspy_tiered_cache.stats import Stats

__all__ = ["StatsReport", "fleet_tables", "format_table", "report"]

#: Human names of the tier levels the core reports, in cascade order.
TIER_LABELS: dict[str, str] = {"l1": "memory (l1)", "disk": "disk", "l2": "redis (l2)", "miss": "miss (upstream)"}


def _core_of(source: Any) -> CacheCore | None:
    if isinstance(source, CacheCore):
        return source
    core = getattr(source, "core", None)  # TieredCache, CachedLM, FunctionCache
    if not isinstance(core, CacheCore):  # a @cached function: its FunctionCache is ``f.cache``
        core = getattr(getattr(source, "cache", None), "core", None)
    return core if isinstance(core, CacheCore) else None


def report(source: Any, *, fleet: bool = False, since: str = "24h", namespace: str | None = None) -> StatsReport:
    """A snapshot report of a cache's counters.

    ``source`` may be a :class:`CacheCore`, anything exposing one as ``.core`` (LiteLLM's ``TieredCache``, DSPy's
    ``CachedLM``, a ``@cached`` function), a :class:`Stats`, or a ``Stats.snapshot()`` dict.

    ``fleet=True`` adds what every process sharing the cache's shared tier counted over ``since`` (``1h``,
    ``24h``, ``7d``; one ``namespace`` or all), the same numbers as ``dspy-tiered-cache stats``: a table and a
    bar chart in a notebook. This process's latest counts are published first, so they are included.
    """
    if fleet:
        core = _core_of(source)
        if core is None:
            raise TypeError("report(fleet=True) needs a cache (CacheCore, TieredCache, CachedLM, @cached function)")
        if core.fleet is not None:
            core.fleet.flush()
        data = read_fleet(core, since=since, namespace=namespace)
        return StatsReport(core.stats.snapshot(), tiers=[t.name for t in core.tiers], fleet=data)
    if isinstance(source, Mapping):
        return StatsReport(dict(source))
    if isinstance(source, Stats):
        return StatsReport(source.snapshot())
    core = _core_of(source)
    if core is None:
        raise TypeError(
            f"report() takes a CacheCore, a TieredCache, a CachedLM, a @cached function or a Stats, "
            f"not {type(source).__name__}"
        )
    return StatsReport(core.stats.snapshot(), tiers=[t.name for t in core.tiers])


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _rate(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) else "-"


def _usd(value: Any) -> str:
    return f"${float(value or 0):.6f}"


def _us(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} µs"


def format_table(headers: list[str], rows: list[list[str]], *, align_right: set[int] | None = None) -> str:
    """A plain text table (no dependency): columns padded to their widest cell, numbers right-aligned."""
    right = align_right or set()
    widths = [max([len(headers[i]), *(len(r[i]) for r in rows)]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        out = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


@dataclass(frozen=True)
class StatsReport:
    """A snapshot of a cache's counters that renders itself (text, HTML, matplotlib)."""

    snapshot: dict[str, Any]
    tiers: list[str] = field(default_factory=list)
    #: The ``"fleet"`` object of ``dspy-tiered-cache stats`` when asked for (``report(..., fleet=True)``).
    fleet: dict[str, Any] | None = None

    _HEADERS = ("tier", "hits", "misses", "hit rate", "stores", "errors", "p50", "p99")

    # -- numbers ---------------------------------------------------------------------------------------
    @property
    def tier_names(self) -> list[str]:
        names = list(self.tiers) or list(self.snapshot.get("tiers", {}))
        return [n for n in names if n in self.snapshot.get("tiers", {})]

    @property
    def hits_by_level(self) -> dict[str, int]:
        """Lookups served per tier, ``joined`` (served by another caller's in-flight call) and ``miss`` (went
        upstream: misses that did not join a flight)."""
        tiers = self.snapshot.get("tiers", {})
        out = {name: _int(tiers[name].get("hits")) for name in self.tier_names}
        out["joined"] = _int(self.snapshot.get("joined_in_flight"))
        out["miss"] = max(0, _int(self.snapshot.get("misses")) - out["joined"])
        return out

    @property
    def hits(self) -> int:
        return _int(self.snapshot.get("hits"))

    @property
    def misses(self) -> int:
        return _int(self.snapshot.get("misses"))

    @property
    def tokens_saved(self) -> int:
        return _int(self.snapshot.get("tokens_saved"))

    @property
    def dollars_saved(self) -> float:
        value = self.snapshot.get("dollars_saved")
        return float(value) if isinstance(value, (int, float)) else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.snapshot)

    # -- renderings ------------------------------------------------------------------------------------
    def _rows(self) -> list[list[str]]:
        rows = []
        for name in self.tier_names:
            t = self.snapshot["tiers"][name]
            rows.append(
                [
                    TIER_LABELS.get(name, name),
                    str(_int(t.get("hits"))),
                    str(_int(t.get("misses"))),
                    _rate(t.get("hit_rate")),
                    str(_int(t.get("sets"))),
                    str(_int(t.get("errors")) + _int(t.get("corrupt"))),
                    _us(t.get("latency_us_p50")),
                    _us(t.get("latency_us_p99")),
                ]
            )
        return rows

    def _summary(self) -> str:
        s = self.snapshot
        lookups = self.hits + self.misses
        parts = [
            f"{lookups} lookups",
            f"{self.hits} hits ({_rate(s.get('hit_rate'))})",
            f"{_int(s.get('joined_in_flight'))} joined in flight",
            f"{_int(s.get('stores'))} stored",
        ]
        if _int(s.get("bypasses")):
            parts.append(f"{_int(s.get('bypasses'))} bypassed")
        return ", ".join(parts)

    def _savings(self) -> str:
        return f"tokens saved: {self.tokens_saved:,} · dollars saved: ${self.dollars_saved:.6f}"

    def __str__(self) -> str:
        table = format_table(list(self._HEADERS), self._rows(), align_right={1, 2, 3, 4, 5, 6, 7})
        text = f"cache stats: {self._summary()}\n{table}\n{self._savings()}"
        if self.fleet is not None:
            text += f"\n\nfleet (every process, last {self.fleet.get('since', '?')}):\n{fleet_tables(self.fleet)}"
        return text

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        """Jupyter's rich display: one self-contained table (inline styles only; notebooks strip <style>)."""
        cell = 'style="padding:2px 10px;text-align:{}"'
        head = "".join(
            f"<th {cell.format('left' if i == 0 else 'right')}>{html.escape(h)}</th>"
            for i, h in enumerate(self._HEADERS)
        )
        body = "".join(
            "<tr>"
            + "".join(
                f"<td {cell.format('left' if i == 0 else 'right')}>{html.escape(v)}</td>" for i, v in enumerate(row)
            )
            + "</tr>"
            for row in self._rows()
        )
        return (
            '<div class="dtc-stats-report">'
            f"<p><b>cache stats</b>: {html.escape(self._summary())}</p>"
            f'<table style="border-collapse:collapse"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f"<p>{html.escape(self._savings())}</p>{self._fleet_html()}</div>"
        )

    def _fleet_html(self) -> str:
        """The fleet tables and an inline SVG bar chart of dollars (else hits) per namespace: no matplotlib."""
        fleet = self.fleet
        if fleet is None:
            return ""
        head = f"<p><b>fleet</b> (every process, last {html.escape(str(fleet.get('since', '?')))})</p>"
        rows = fleet.get("by_namespace") or {}
        metric = "dollars_saved" if any(r.get("dollars_saved") for r in rows.values()) else "hits"
        values = {ns: float(r.get(metric) or 0) for ns, r in rows.items()}
        top = max([*values.values(), 1e-12])
        bars = "".join(
            f'<text x="0" y="{i * 22 + 15}" font-size="12">{html.escape(ns)}</text>'
            f'<rect x="140" y="{i * 22 + 4}" width="{max(1.0, 300 * v / top):.1f}" height="14" fill="#4c72b0"/>'
            f'<text x="{146 + 300 * v / top:.1f}" y="{i * 22 + 15}" font-size="12">'
            f"{_usd(v) if metric == 'dollars_saved' else int(v)}</text>"
            for i, (ns, v) in enumerate(values.items())
        )
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="560" height="{22 * len(values) + 8}" '
            f'role="img" aria-label="{metric} per namespace">{bars}</svg>'
        )
        table = html.escape(fleet_tables(fleet))
        return f"{head}<pre>{table}</pre><p>{metric.replace('_', ' ')} per namespace</p>{svg}"

    def plot_fleet(self, ax: Any = None) -> Any:
        """Dollars saved (else hits) per namespace across the fleet (needs matplotlib); returns the Axes."""
        if self.fleet is None:
            raise ValueError("this report has no fleet data: use report(cache, fleet=True)")
        import matplotlib.pyplot as plt

        rows = self.fleet.get("by_namespace") or {}
        metric = "dollars_saved" if any(r.get("dollars_saved") for r in rows.values()) else "hits"
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        bars = ax.barh(list(rows), [float(r.get(metric) or 0) for r in rows.values()], color="#4c72b0")
        ax.bar_label(bars, padding=2)
        ax.set_xlabel(metric.replace("_", " "))
        ax.set_title(f"fleet: {metric.replace('_', ' ')} per namespace, last {self.fleet.get('since', '?')}")
        return ax

    def plot(self, ax: Any = None) -> Any:
        """A bar chart of lookups served per tier and sent upstream (needs matplotlib); returns the Axes."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("StatsReport.plot() needs matplotlib: pip install matplotlib") from exc
        levels = self.hits_by_level
        labels = [TIER_LABELS.get(k, k) for k in levels]
        palette = {"miss": "#dd8452", "joined": "#55a868"}
        colors = [palette.get(k, "#4c72b0") for k in levels]
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        bars = ax.bar(labels, list(levels.values()), color=colors)
        ax.bar_label(bars, padding=2)
        ax.set_ylim(top=max([1, *levels.values()]) * 1.2)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("calls")
        ax.set_title("lookups served per tier (miss = sent to the model)")
        return ax


def fleet_tables(fleet: Mapping[str, Any]) -> str:
    """The fleet totals, per namespace and per model, as text tables (shared by the CLI and reports)."""
    dollars = float(fleet.get("dollars_saved") or 0)
    lines = [
        f"{_int(fleet.get('hits')):,} hits, {_int(fleet.get('misses')):,} misses ({_rate(fleet.get('hit_rate'))}) · "
        f"tokens saved: {_int(fleet.get('tokens_saved')):,} · dollars saved: ${dollars:.6f}"
    ]
    by_ns = fleet.get("by_namespace") or {}
    if by_ns:
        rows = [
            [ns, f"{_int(r.get('hits')):,}", f"{_int(r.get('misses')):,}", _rate(r.get("hit_rate")),
             f"{_int(r.get('tokens_saved')):,}", _usd(r.get("dollars_saved"))]
            for ns, r in by_ns.items()
        ]
        lines += ["", format_table(["namespace", "hits", "misses", "hit rate", "tokens saved", "dollars saved"], rows,
                                   align_right={1, 2, 3, 4, 5})]
    by_model = fleet.get("by_model") or {}
    if by_model:
        rows = [
            [m, f"{_int(r.get('hits')):,}", f"{_int(r.get('tokens_saved')):,}", _usd(r.get("dollars_saved"))]
            for m, r in by_model.items()
        ]
        lines += ["", format_table(["model", "hits", "tokens saved", "dollars saved"], rows, align_right={1, 2, 3})]
    stored = {name: t for name, t in (fleet.get("tiers") or {}).items() if t.get("writes")}
    if stored:  # what the fleet's writes cost each tier
        rows = [[name, f"{_int(t.get('writes')):,}", f"{t.get('bytes_per_entry') or 0:,.0f}",
                 f"{t.get('compression_ratio') or 0:.2f}x"] for name, t in stored.items()]  # fmt: skip
        lines += ["", format_table(["tier", "entries written", "bytes per entry", "compression"], rows,
                                   align_right={1, 2, 3})]  # fmt: skip
    return "\n".join(lines)


# ``CacheCore.report()``: the report feature provides it through the core's extension point (hooks.py).
hooks.provide("report", report)
