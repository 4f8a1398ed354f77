"""The core's one extension point: how features (record/replay, fleet, report) attach to it from above.

The core knows no feature. A feature module registers, when it is imported, what it adds to every core:

* :func:`on_attach` — a function run once for each core as it is built (after its tiers, single-flight and
  invalidation bus exist). What it returns is kept in ``core.attached`` under the feature's name and closed
  (``close()``) when the core closes, before the tiers: the fleet publisher sends its last batch this way.
* :func:`provide` — the implementation of one of the operations the core offers but does not implement itself
  (:data:`Operation`): ``core.export()`` / ``core.import_()`` and ``core.report()`` call what the record/replay and
  report features provided, and a replay-mode miss asks the record/replay feature to describe itself.

Both are read once, when a core is built: the hit path never looks at this module, so a feature nobody installed
costs nothing, and one that is installed costs only what it does itself. The package's ``__init__`` imports the
shipped features, so every core built in a process that imported ``dspy_tiered_cache`` has them (importing any
submodule runs the package's ``__init__`` first). The pattern is pytest's hooks and httpx's event hooks: the host
defines the hook points, plugins fill them, and the host never imports a plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

__all__ = ["Attachment", "Operation", "attachers", "on_attach", "operations", "provide"]

#: The operations a core offers on behalf of features (see :func:`provide`).
Operation = Literal["export", "import", "report", "replay_miss"]


class Attachment(Protocol):
    """What a feature keeps per core; closed with the core."""

    def close(self) -> None: ...


#: Called with the core being built. Its parameter is ``Any`` here because this module sits below the core: even a
#: type-only import of ``CacheCore`` would be an arrow pointing up. Features, above the core, annotate it exactly.
Attach = Callable[[Any], "Attachment | None"]

_attachers: dict[str, Attach] = {}
_provided: dict[str, Callable[..., Any]] = {}


def on_attach(name: str, attach: Attach) -> None:
    """Run ``attach(core)`` for every core built from now on; its result is ``core.attached[name]``.

    Registering a name again replaces the earlier function (a module imported twice must not attach twice)."""
    _attachers[name] = attach


def provide(operation: Operation, implementation: Callable[..., Any]) -> None:
    """Make ``implementation`` the one behind ``operation`` for every core built from now on."""
    _provided[operation] = implementation


def attachers() -> tuple[tuple[str, Attach], ...]:
    """The registered attach functions, in registration order (a core calls each once, when it is built)."""
    return tuple(_attachers.items())


def operations() -> dict[str, Callable[..., Any]]:
    """The provided operations by name: a copy, which a core keeps (bound once, when it is built)."""
    return dict(_provided)
