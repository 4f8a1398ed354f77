"""The rules that keep a near neighbour from answering a different question."""

from __future__ import annotations

import pytest

from dspy_tiered_cache.semantic.verifier import RuleVerifier

VERIFIER = RuleVerifier()


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("How can I reset my password?", "How do I reset my password?"),
        ("Please convert 5 kilometers to miles.", "Convert 5 kilometers to miles."),
        ("List the first ten prime numbers.", "List the first 10 prime numbers."),
        ("Should I purchase Tesla stock now?", "Should I buy Tesla stock now?"),
        ("In Python, how do I merge two dictionaries?", "How do I merge two dictionaries in Python?"),
    ],
)
def test_paraphrases_pass(query: str, candidate: str) -> None:
    assert VERIFIER.check(query, candidate) is None


@pytest.mark.parametrize(
    ("query", "candidate", "rule"),
    [
        ("How do I disable 2FA?", "How do I enable 2FA?", "antonym"),
        ("Why can't dogs eat grapes?", "Can dogs eat grapes?", "negation"),
        ("Convert 50 kilometers to miles.", "Convert 5 kilometers to miles.", "numbers"),
        ("What is 80% of 15?", "What is 15% of 80?", "numbers"),
        ("Convert 5 miles to kilometers.", "Convert 5 kilometers to miles.", "direction"),
        ("What is the capital of Spain?", "What is the capital of France?", "entity"),
        ("Set a timer for 10 seconds.", "Set a timer for 10 minutes.", "content"),
        ("How do I reset my PIN?", "How do I reset my password?", "entity"),
    ],
)
def test_meaning_changes_are_rejected_by_name(query: str, candidate: str, rule: str) -> None:
    assert VERIFIER.check(query, candidate) == rule
