"""Test machinery that is not shipped: the fault-injection harnesses of ``tests/fault`` and ``benchmarks/faults.py``.

``faults`` drives a busy cache through Redis faults (kill, SIGSTOP, restart, stalls, a poisoned entry) and measures
what each costs; ``topology_faults`` does the same per deployment (standalone, Sentinel, Cluster) and door. They
live here, beside the tests, because the package never needs them at run time: ``dspy_tiered_cache.testing``
ships only what users call (the stand-in provider, the Redis server helpers). Tests import them as
``support.faults`` (pytest puts ``tests/`` on ``sys.path``); ``benchmarks/faults.py`` adds ``tests/`` itself.
"""
