"""A verifier learned from third-party labelled pairs: a logistic-regression head over features of the tier's own
embedding model, used when weights trained for that model ship with the package (``weights/*.json``).

Why: the hand rules of :mod:`.verifier` reject at the first differing word and pass whatever no rule names;
measured on human-labelled pairs they were both too strict and too lax. Here the same observations become
*features* - the sentence cosine, how well each side's content words align with the other side's (by their own
embeddings), what the unaligned words weigh in their sentence, and each rule's mismatch flag (question word,
person, tense, modality, numbers, negation, antonym, direction, word order, names) - and a linear head weighs
them, trained by ``benchmarks/semantic_train.py`` on the *tune* sets only (``benchmarks/semantic_data.py``). The
acceptance cut-off shipped with the weights was chosen on out-of-fold predictions of those sets to keep wrong
answers at or under 1 %; the report sets were never read for it.

The weights are plain JSON (no pickle), keyed to the embedding model's name and dimension: with another model,
or vectors of another size, :class:`LearnedVerifier` falls back to the rules. Every rejection keeps a reason:
``learned_<feature>``, the feature that cost the most score against a pair that could not be more alike (e.g.
``learned_cosine``, ``learned_negation``). The frame - question word, person, tense, modality - stays a hard
rule in front of the head (reason ``question_word``, ...): the tune sets hold too few questions to learn it from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from dspy_tiered_cache.semantic.lexicon import ANTONYM_PAIRS, parse, stem
from dspy_tiered_cache.semantic.verifier import RuleVerifier, Verdict, WordEmbed, _frame, _role_swap

#: The features, in the order the weights file lists them (it names them too; a mismatch refuses the file).
FEATURES: tuple[str, ...] = (
    "cosine",
    "align_mean",
    "align_min",
    "unaligned",
    "unaligned_mass",
    "kept_min",
    "names",
    "question_word",
    "person",
    "tense",
    "modality",
    "numbers",
    "negation",
    "antonym",
    "direction",
    "word_order",
    "length_gap",
    "overlap",
)
_SIMILARITIES = ("cosine", "align_mean", "align_min", "kept_min", "overlap")
#: The feature values of a pair that could not be more alike (the reference for naming a rejection's reason).
_IDEAL = np.asarray([1.0 if f in _SIMILARITIES else 0.0 for f in FEATURES])
#: A content word "aligns" when its closest word on the other side is at least this similar.
WORD_ALIGN = 0.6
NAME_ALIGN = 0.85


def model_key(model: str) -> str:
    """``"huggingface/sentence-transformers/all-MiniLM-L6-v2"`` -> ``"allminilml6v2"``: the provider prefix and
    punctuation dropped, so a model served through any LiteLLM provider finds its weights."""
    return re.sub(r"[^a-z0-9]", "", model.rsplit("/", 1)[-1].lower())


@dataclass(frozen=True, slots=True)
class Head:
    """One shipped head: the standardisation, the weights and the operating point chosen on the tune sets."""

    model: str
    dimension: int
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    cutoff: float
    cosine_floor: float
    aliases: tuple[str, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Head:
        if tuple(data["features"]) != FEATURES:
            raise ValueError("the weights file lists other features than this release computes")
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "weights")}
        if any(a.shape != (len(FEATURES),) for a in arrays.values()):
            raise ValueError("the weights file's arrays do not match the feature count")
        return cls(
            model=str(data["model"]),
            dimension=int(data["dimension"]),
            bias=float(data["bias"]),
            cutoff=float(data["cutoff"]),
            cosine_floor=float(data["cosine_floor"]),
            aliases=tuple(model_key(a) for a in data.get("aliases", [data["model"]])),
            **arrays,
        )

    def score(self, x: np.ndarray) -> tuple[float, str]:
        """The probability that the pair is a duplicate, and the feature pulling it down the most."""
        z = (x - self.mean) / self.scale
        contributions = self.weights * z
        logit = float(contributions.sum() + self.bias)
        p = 1.0 / (1.0 + float(np.exp(-np.clip(logit, -50.0, 50.0))))
        # The reason: the feature that cost the most score against an ideal pair (cosine 1, every word aligned,
        # no flag); the head is monotone, so every cost is >= 0 and a feature of weight 0 costs nothing.
        cost = self.weights * (_IDEAL - x) / self.scale
        return p, FEATURES[int(np.argmax(cost))]


@cache
def shipped_heads() -> tuple[Head, ...]:
    """Every head in the package's ``weights`` folder (read once; a broken file is skipped, never fatal)."""
    heads: list[Head] = []
    folder = resources.files("dspy_tiered_cache.semantic").joinpath("weights")
    if not folder.is_dir():
        return ()
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            try:
                heads.append(Head.from_json(json.loads(entry.read_text(encoding="utf-8"))))
            except (ValueError, KeyError, TypeError):
                continue
    return tuple(heads)


def head_for(model: str) -> Head | None:
    key = model_key(model)
    return next((h for h in shipped_heads() if key in h.aliases), None)


def features(query: str, candidate: str, embed: WordEmbed) -> tuple[np.ndarray, int]:
    """The feature vector of one pair and the embedding's dimension; ``embed`` is called once, with every text
    it needs in one batch. Raises what ``embed`` raises (the caller fails closed)."""
    a, b = parse(query), parse(candidate)
    stems_a = {stem(w) for w in a.words}
    stems_b = {stem(w) for w in b.words}
    only_a = sorted(w for w in a.content if stem(w) not in stems_b)
    only_b = sorted(w for w in b.content if stem(w) not in stems_a)
    whole = {id(a): " ".join(a.words), id(b): " ".join(b.words)}
    without = {
        (id(side), w): " ".join(x for x in side.words if x != w) for side, ws in ((a, only_a), (b, only_b)) for w in ws
    }
    shared = {p for p, _ in a.directions} & {p for p, _ in b.directions}
    dir_a = {d for d in a.directions if d[0] in shared}
    dir_b = {d for d in b.directions if d[0] in shared}
    swapped = [(x, y) for p, x in dir_a for q, y in dir_b if p == q and x != y and (p, y) not in dir_a]
    words = sorted(a.content | b.content | {x for x, _ in swapped} | {y for _, y in swapped})
    texts = list(dict.fromkeys([query, candidate, *words, *whole.values(), *without.values()]))
    vectors = np.asarray(embed(texts), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    at = {t: i for i, t in enumerate(texts)}

    def sim(x: str, y: str) -> float:
        return float(vectors[at[x]] @ vectors[at[y]])

    best: list[float] = []
    unaligned = 0
    mass = 0.0
    kept_min = 1.0
    names = 0
    for side, other, lonely in ((a, b, only_a), (b, a, only_b)):
        others = [at[w] for w in other.content]
        best.extend(1.0 for w in side.content if w not in lonely)
        for word in lonely:
            closest = float(np.max(vectors[others] @ vectors[at[word]])) if others else 0.0
            best.append(closest)
            if word in side.names and closest < NAME_ALIGN:
                names += 1
            if closest < WORD_ALIGN:
                unaligned += 1
                kept = sim(whole[id(side)], without[(id(side), word)])
                kept_min = min(kept_min, kept)
                mass += 1.0 - kept
    antonym = any(
        (x in a.polar and y in b.polar and not (y in a.polar or x in b.polar))
        or (y in a.polar and x in b.polar and not (x in a.polar or y in b.polar))
        for x, y in ANTONYM_PAIRS
    )
    n_a, n_b = len(a.content), len(b.content)
    union = {stem(w) for w in a.content} | {stem(w) for w in b.content}
    common = {stem(w) for w in a.content} & {stem(w) for w in b.content}
    row = {
        "cosine": sim(query, candidate),
        "align_mean": float(np.mean(best)) if best else 1.0,
        "align_min": min(best) if best else 1.0,
        "unaligned": float(min(unaligned, 4)),
        "unaligned_mass": mass,
        "kept_min": kept_min,
        "names": float(min(names, 2)),
        "question_word": float(a.questions != b.questions),
        "person": float(bool(a.persons and b.persons and a.persons != b.persons)),
        "tense": float(a.past != b.past or a.future != b.future),
        "modality": float(a.obligation != b.obligation),
        "numbers": float(a.numbers != b.numbers),
        "negation": float(a.negations != b.negations),
        "antonym": float(antonym),
        "direction": float(any(sim(x, y) < WORD_ALIGN for x, y in swapped)),
        "word_order": float(_role_swap(a, b) is not None),
        "length_gap": abs(n_a - n_b) / max(n_a, n_b, 1),
        "overlap": len(common) / len(union) if union else 1.0,
    }
    return np.asarray([row[f] for f in FEATURES], dtype=np.float64), int(vectors.shape[1])


class LearnedVerifier:
    """The shipped head for ``model`` when there is one (name "learned"), else the rules (name "rules")."""

    def __init__(self, model: str, embed_words: WordEmbed | None = None) -> None:
        self.head = head_for(model) if embed_words is not None else None
        self.embed_words = embed_words
        self.rules = RuleVerifier(embed_words)
        self.name = "learned" if self.head is not None else "rules"

    @property
    def cosine_floor(self) -> float | None:
        """The lowest cosine the head was tuned to examine (the tier's default threshold with this head)."""
        return self.head.cosine_floor if self.head is not None else None

    def check(self, query: str, candidate: str) -> str | None:
        return self.explain(query, candidate).reason

    def explain(self, query: str, candidate: str) -> Verdict:
        return self.judge(query, candidate)[1]

    def judge(self, query: str, candidate: str) -> tuple[float | None, Verdict]:
        """The verdict, and the head's probability behind it: 1 for the same text, 0 for a changed frame, None
        where the head did not decide (no head, the rules instead, or embeddings unavailable). The probability is
        what a cut-off other than the shipped one would act on (``benchmarks/semantic_ceiling.py``)."""
        if self.head is None or self.embed_words is None:
            return None, self.rules.explain(query, candidate)
        if query.strip().casefold() == candidate.strip().casefold():
            return 1.0, Verdict(None)
        # The frame stays a rule: the tune sets hold too few questions to teach the head what a changed question
        # word, person, tense or modality does (it learned weight 0 for them), and each changes what is asked.
        frame = _frame(parse(query), parse(candidate))
        if frame is not None:
            return 0.0, frame
        try:
            x, dimension = features(query, candidate, self.embed_words)
        except Exception as exc:  # an embedding failure fails closed: a miss, never a wrong answer
            return None, Verdict("learned_unavailable", f"embeddings unavailable: {type(exc).__name__}")
        if dimension != self.head.dimension:  # same name, other vectors: the head does not apply
            return None, self.rules.explain(query, candidate)
        p, weakest = self.head.score(x)
        if p >= self.head.cutoff:
            return p, Verdict(None, f"p={p:.3f}")
        return p, Verdict("learned_" + weakest, f"p={p:.3f} < {self.head.cutoff:.3f}")
