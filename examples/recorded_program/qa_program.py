"""A small DSPy program whose tests run from a committed recording (see test_qa_program.py and README.md)."""

from __future__ import annotations

import dspy


class Explain(dspy.Signature):
    """Explain a caching term in one sentence."""

    term: str = dspy.InputField()
    explanation: str = dspy.OutputField()


def build() -> dspy.Module:
    return dspy.ChainOfThought(Explain)


def explain(program: dspy.Module, term: str) -> str:
    return str(program(term=term).explanation)
