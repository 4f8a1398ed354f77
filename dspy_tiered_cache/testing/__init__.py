"""Test helpers shipped with the package: the local provider stand-in and Redis server fixtures."""
