"""The check a semantic neighbour must pass before its answer is served, and why it failed when it does not.

Why: an embedding measures how much two texts *share*, not whether they ask the same thing. Measured on
human-labelled pairs (benchmarks/semantic.py), no cosine threshold keeps wrong answers near 1 % without also
dropping most true duplicates. A neighbour over the threshold is therefore only a *candidate*; this module decides
whether the two requests differ in a way that changes the answer. Each rule that fails has a name, counted in the
stats (``reasons``) and returned by :meth:`RuleVerifier.explain` with the words that made it fail:

* ``question_word`` - what / who / where / when / why / how / how many / a yes-no question: another question.
* ``person``        - I / we / you / he / they, when both sides name one ("How can I" vs "How did you").
* ``tense``         - past (did, was) or future (will) on one side only.
* ``modality``      - advice or obligation (should, must) on one side only ("Should I buy" vs "Can I buy").
* ``numbers``       - the numbers (digits and number words, in order) must be equal.
* ``negation``      - the same number of negations.
* ``antonym``       - a word of a polar pair (enable/disable, man/woman, ...) on one side only.
* ``direction``     - the word after to/from/than/vs must mean the same ("km to miles" vs "miles to km").
* ``name``          - a name, acronym or quoted text of one side has no counterpart on the other.
* ``content``       - a content word of one side has no counterpart of like meaning on the other.

Content words are judged by meaning, not by a table: every word one side has and the other lacks is embedded with
the tier's own embedding model and aligned with its closest word on the other side; it passes when that cosine
reaches ``word_similarity`` ("internship at Google" / "internship from Google", "signs" / "symptoms"). Without a
word embedding function the verifier fails closed: any differing content word rejects.

Limits (measured, see docs/semantic.md): English only; meaning carried by word order alone, beyond the directional
prepositions, is invisible ("the dog bit the man" passes against "the man bit the dog"); world knowledge too.
It compares only the text it is given: the last user turn (everything else must match exactly, see :mod:`.scope`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dspy_tiered_cache.semantic.lexicon import ANTONYM_PAIRS, Parsed, parse, stem

#: Embeds several words at once (one batch call); each result a vector.
WordEmbed = Callable[[Sequence[str]], Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Verdict:
    """``reason`` is None when the neighbour may answer; ``detail`` names what differed, for logs and tests."""

    reason: str | None
    detail: str = ""


_PASS = Verdict(None)


class RuleVerifier:
    """``check(query, candidate)`` returns None when the candidate may answer the query, else the failed rule."""

    name = "rules"

    def __init__(
        self,
        embed_words: WordEmbed | None = None,
        *,
        word_similarity: float = 0.6,
        name_similarity: float = 0.85,
        redundant_similarity: float = 0.9,
    ) -> None:
        self.embed_words = embed_words
        self.word_similarity = word_similarity
        self.name_similarity = name_similarity
        self.redundant_similarity = redundant_similarity

    def check(self, query: str, candidate: str) -> str | None:
        return self.explain(query, candidate).reason

    def explain(self, query: str, candidate: str) -> Verdict:
        if query.strip().casefold() == candidate.strip().casefold():
            return _PASS
        a, b = parse(query), parse(candidate)
        frame = _frame(a, b)
        if frame is not None:
            return frame
        if a.numbers != b.numbers:
            return Verdict("numbers", f"{list(a.numbers)} vs {list(b.numbers)}")
        if a.negations != b.negations:
            return Verdict("negation", f"{a.negations} vs {b.negations}")
        for x, y in ANTONYM_PAIRS:
            if (x in a.polar and y in b.polar and not (y in a.polar or x in b.polar)) or (
                y in a.polar and x in b.polar and not (x in a.polar or y in b.polar)
            ):
                return Verdict("antonym", f"{x}/{y}")
        return self._words(a, b)

    def _words(self, a: Parsed, b: Parsed) -> Verdict:
        stems_a = {stem(w) for w in a.words}
        stems_b = {stem(w) for w in b.words}
        only_a = sorted(w for w in a.content if stem(w) not in stems_b)
        only_b = sorted(w for w in b.content if stem(w) not in stems_a)
        swap = _role_swap(a, b)
        if swap is not None:
            return Verdict("word_order", swap)
        shared = {p for p, _ in a.directions} & {p for p, _ in b.directions}
        dir_a = {d for d in a.directions if d[0] in shared}
        dir_b = {d for d in b.directions if d[0] in shared}
        swapped = [(p, x, y) for p, x in dir_a for q, y in dir_b if p == q and x != y and (p, y) not in dir_a]
        if not only_a and not only_b and not swapped:
            return _PASS
        if self.embed_words is None:
            word = (only_a or only_b or [swapped[0][1]])[0]
            return Verdict("name" if word in a.names | b.names else "content", word)
        # One batch: every content word, each side's text, and each side's text without one of its lonely words.
        whole = {id(a): " ".join(a.words), id(b): " ".join(b.words)}
        without = {
            (id(side), w): " ".join(x for x in side.words if x != w)
            for side, ws in ((a, only_a), (b, only_b))
            for w in ws
        }
        words = sorted(a.content | b.content | {x for _, x, _ in swapped} | {y for _, _, y in swapped})
        texts = [*words, *whole.values(), *without.values()]
        try:
            vectors = np.asarray(self.embed_words(texts), dtype=np.float32)
        except Exception as exc:  # an embedding failure fails closed: a miss, never a wrong answer
            return Verdict("content", f"word embeddings unavailable: {type(exc).__name__}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        position = {w: i for i, w in enumerate(texts)}
        for _, x, y in swapped:
            if float(vectors[position[x]] @ vectors[position[y]]) < self.word_similarity:
                return Verdict("direction", f"{x} vs {y}")
        for side, lonely, other in ((a, only_a, b.content), (b, only_b, a.content)):
            others = [position[w] for w in other]
            for word in lonely:
                best = float(np.max(vectors[others] @ vectors[position[word]])) if others else 0.0
                if word in side.names:
                    if best < self.name_similarity:
                        return Verdict("name", f"{word} (closest {best:.2f})")
                    continue
                if best >= self.word_similarity:
                    continue  # a word of like meaning stands on the other side
                # No counterpart: does the word matter to its own sentence? ("capital city of France")
                kept = float(vectors[position[whole[id(side)]]] @ vectors[position[without[(id(side), word)]]])
                if kept < self.redundant_similarity:
                    return Verdict("content", f"{word} (closest {best:.2f}, sentence without it {kept:.2f})")
        return _PASS


def _role_swap(a: Parsed, b: Parsed) -> str | None:
    """Shared content words that swap places around a third one ("the doctor helps the patient" vs "the patient
    helps the doctor"): same words, another meaning. A phrase moved as a whole ("In Python, how do I ...")
    keeps its words' order relative to the rest and passes."""
    shared = [w for w in dict.fromkeys(a.words) if w in a.content and w in b.content]
    if len(shared) < 3:
        return None
    where_b = {w: b.words.index(w) for w in shared}
    where_a = {w: a.words.index(w) for w in shared}
    for i, x in enumerate(shared):
        for z in shared[i + 1 :]:
            for y in shared:
                if where_a[x] < where_a[z] < where_a[y] and where_b[y] < where_b[z] < where_b[x]:
                    return f"{x} ... {y}"
    return None


def _frame(a: Parsed, b: Parsed) -> Verdict | None:
    """Question word, person, tense, modality: few closed-class words that change what is asked."""
    if a.questions != b.questions:
        return Verdict("question_word", f"{sorted(a.questions)} vs {sorted(b.questions)}")
    if a.persons and b.persons and a.persons != b.persons:
        return Verdict("person", f"{sorted(a.persons)} vs {sorted(b.persons)}")
    if a.past != b.past or a.future != b.future:
        return Verdict("tense", "past" if a.past != b.past else "future")
    if a.obligation != b.obligation:
        return Verdict("modality", "should/must")
    return None


class NoVerifier:
    """Accept every neighbour over the threshold (what other semantic caches do): for measurement only."""

    name = "none"

    def check(self, query: str, candidate: str) -> str | None:
        return None


class JudgedVerifier:
    """The rules, then an LLM judge for what they let through. It fails closed: anything but a clear "yes"
    (an error, a timeout, another answer) rejects the neighbour, so a broken judge costs hits, never correctness.
    Each candidate that passes the rules costs one judge call on an exact miss."""

    name = "rules+llm"
    _PROMPT = (
        "Two users sent these requests to an assistant. Would one and the same answer serve both equally well, "
        "with no fact, number, name, negation or direction differing? Reply with exactly YES or NO.\n\n"
        "Request A: {a}\n\nRequest B: {b}"
    )

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        embed_words: WordEmbed | None = None,
    ) -> None:
        self.rules = RuleVerifier(embed_words)
        self.model = model
        self._kwargs = {k: v for k, v in (("api_base", api_base), ("api_key", api_key)) if v}

    def check(self, query: str, candidate: str) -> str | None:
        rule = self.rules.check(query, candidate)
        if rule is not None:
            return rule
        import litellm

        try:
            response = litellm.completion(
                model=self.model,
                messages=[{"role": "user", "content": self._PROMPT.format(a=query, b=candidate)}],
                temperature=0,
                max_tokens=3,
                caching=False,
                cache={"no-cache": True, "no-store": True},
                **self._kwargs,
            )
            reply = str(response.choices[0].message.content or "")
        except Exception:
            return "judge"
        return None if reply.strip().lower().startswith("yes") else "judge"


def make_verifier(
    name: str,
    *,
    embed_words: WordEmbed | None = None,
    judge_model: str | None = None,
    judge_api_base: str | None = None,
    judge_api_key: str | None = None,
) -> RuleVerifier | NoVerifier | JudgedVerifier:
    """The rules, the judge or none ("learned" is built by the tier: it needs the embedding model's name)."""
    if name == "none":
        return NoVerifier()
    if name == "rules+llm" and judge_model:
        return JudgedVerifier(judge_model, api_base=judge_api_base, api_key=judge_api_key, embed_words=embed_words)
    return RuleVerifier(embed_words)
