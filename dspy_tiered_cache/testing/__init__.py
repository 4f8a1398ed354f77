"""Test helpers shipped with the package: the local provider stand-in and Redis server fixtures.

A separate package the runtime never imports (only the ``demo`` command runs the stand-in provider): tools for
users' own tests and scripts. The fault-injection harnesses of this project's own tests are not shipped; they
live in ``tests/support/`` (see docs/layout.md).
"""
