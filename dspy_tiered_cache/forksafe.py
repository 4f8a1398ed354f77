"""Fresh locks in a forked child (gunicorn and celery pre-fork workers fork after the app warmed its cache).

``fork()`` copies memory but only the calling thread. A lock that another thread (the background writer, a
request thread) held at that instant stays held forever in the child, and the child's first cache call would
hang. Objects that own locks register here and get new ones in the child, before any child code runs.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    _objects.add(obj)


def _reinit() -> None:
    for obj in list(_objects):
        obj._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_reinit)
