"""The rules that keep a near neighbour from answering a different question, each rejection with its reason.

Word meaning comes from an embedding function; here the stand-in provider's bag-of-words vectors (no torch in
the tests), under which different words are unrelated, so these tests pin the frame rules and the fail-closed
behaviour. How the verifier does with a real sentence-embedding model is measured in benchmarks/semantic.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dspy_tiered_cache.semantic.verifier import RuleVerifier
from dspy_tiered_cache.testing.provider import bag_of_words_vector


def _words(texts: Sequence[str]) -> list[list[float]]:
    return [bag_of_words_vector(text) for text in texts]


VERIFIER = RuleVerifier(_words)


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("How can I reset my password?", "How do I reset my password?"),
        ("Please convert 5 kilometers to miles.", "Convert 5 kilometers to miles."),
        ("List the first ten prime numbers.", "List the first 10 prime numbers."),
        ("In Python, how do I merge two dictionaries?", "How do I merge two dictionaries in Python?"),
        ("what is the capital of France", "What is the capital of France?"),
        ("How do I get an internship at Google?", "How do I get internships at google?"),
    ],
)
def test_paraphrases_pass(query: str, candidate: str) -> None:
    assert VERIFIER.explain(query, candidate).reason is None


@pytest.mark.parametrize(
    ("query", "candidate", "rule"),
    [
        # The cases the issue found served by the old rules: question word, person, tense, modality.
        ("Where is my girlfriend?", "Who is my girlfriend?", "question_word"),
        ("Is Israel a country?", "Why is Israel a country?", "question_word"),
        ("Do I need friends?", "Why do we need friends?", "question_word"),
        ("How can I steal bitcoins?", "How did you steal bitcoins?", "person"),
        ("How do I learn English?", "How did I learn English?", "tense"),
        ("Should I buy Tesla stock?", "Can I buy Tesla stock?", "modality"),
        ("How many people live in Paris?", "How do people live in Paris?", "question_word"),
        # Facts that change the answer.
        ("How do I disable 2FA?", "How do I enable 2FA?", "antonym"),
        ("Can dogs not eat grapes?", "Can dogs eat grapes?", "negation"),
        ("Convert 50 kilometers to miles.", "Convert 5 kilometers to miles.", "numbers"),
        ("What is 80% of 15?", "What is 15% of 80?", "numbers"),
        ("Convert 5 miles to kilometers.", "Convert 5 kilometers to miles.", "direction"),
        ("What is the capital of Spain?", "What is the capital of France?", "name"),
        ("Set a timer for 10 seconds.", "Set a timer for 10 minutes.", "content"),
    ],
)
def test_meaning_changes_are_rejected_by_name(query: str, candidate: str, rule: str) -> None:
    verdict = VERIFIER.explain(query, candidate)
    assert verdict.reason == rule, verdict
    assert verdict.detail  # every rejection says what differed
    assert VERIFIER.check(query, candidate) == rule


def test_without_word_meanings_a_differing_content_word_fails_closed() -> None:
    plain = RuleVerifier()
    assert plain.check("Set a timer for 10 seconds.", "Set a timer for 10 minutes.") == "content"
    assert plain.check("How can I reset my password?", "How do I reset my password?") is None


def test_a_failing_word_embedding_rejects_instead_of_serving() -> None:
    def broken(texts: Sequence[str]) -> list[list[float]]:
        raise ConnectionError("embedding endpoint down")

    verdict = RuleVerifier(broken).explain("Set a timer for 10 seconds.", "Set a timer for 10 minutes.")
    assert verdict.reason == "content"
    assert "ConnectionError" in verdict.detail


def test_words_close_in_meaning_pass_and_distant_ones_do_not() -> None:
    # A real embedding's geometry in miniature: "signs" and "symptoms" share a direction, "cure" does not.
    space = {"signs": [1.0, 0.2, 0.0], "symptoms": [0.9, 0.3, 0.0], "cure": [0.0, 0.1, 1.0], "flu": [0.0, 1.0, 0.0]}
    verifier = RuleVerifier(lambda words: [space.get(w, [0.0, 0.0, 0.0]) for w in words])
    assert verifier.check("What are the signs of flu?", "What are the symptoms of flu?") is None
    assert verifier.explain("What are the signs of flu?", "What is the cure of flu?").reason == "content"
