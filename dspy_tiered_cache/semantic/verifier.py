"""The deterministic check a semantic neighbour must pass before its answer is served.

Why: an embedding (and a bag-of-words one most of all) measures how much two texts *share*, not whether they ask
the same thing. "How do I enable 2FA?" and "How do I disable 2FA?" share everything but one word; so do
"Convert 5 km to miles" and "Convert 5 miles to km" (every word, in another order). A nearest neighbour over a
threshold is therefore only a *candidate*; this module decides whether the two requests differ in a way that
changes the answer.

The rules (all must pass; each failure has a name, counted in the stats and shown in the tests):

* ``numbers``   - the multisets of numbers must be equal (digits and number words: "10" == "ten").
* ``negation``  - the same number of negations ("not", "n't", "no", "never", "without", ...).
* ``antonym``   - no word of a polar pair (enable/disable, buy/sell, before/after, ...) on one side only.
* ``entity``    - every name-like token of one side (capitalised mid-sentence, acronym, mixed letters+digits,
                  quoted text) appears in the other.
* ``direction`` - the word after each directional preposition (to/into, from, than, vs) is the same:
                  "km to miles" vs "miles to km" share all words but not their order.
* ``content``   - after lower-casing, crude stemming and a small synonym table, the two sides have the same
                  content words (function words, question words and politeness fillers may differ).

Limits (measured in ``benchmarks/semantic.py``, listed in the README): English only; the synonym table is
small, so a real paraphrase that swaps content words it does not know ("signs" for "symptoms") is rejected - a
miss, never a wrong answer; meaning carried by word order alone, beyond the directional prepositions, is invisible
("the dog bit the man" passes against "the man bit the dog"); so is world knowledge (two names of one city). It
compares only the text it is given: the last user turn (everything else must match exactly, see :mod:`.scope`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_WORD_RE: Final = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z]+(?:'[A-Za-z]+)?|[%$€£]")
_QUOTED_RE: Final = re.compile("[\"'`\u201c\u2018]([^\"'`\u201d\u2019]{1,80})[\"'`\u201d\u2019]")
_SPLIT_UNIT_RE: Final = re.compile(r"(\d)([A-Za-z%])")

_NUMBER_WORDS: Final = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000", "dozen": "12",
    "twice": "2", "once": "1", "half": "0.5", "double": "2", "triple": "3",
}  # fmt: skip

_NEGATIONS: Final = frozenset(
    {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot", "nowhere", "non"}
)

_ANTONYM_PAIRS: Final = (
    ("enable", "disable"), ("allow", "block"), ("allow", "deny"), ("increase", "decrease"),
    ("add", "remove"), ("before", "after"), ("maximum", "minimum"), ("max", "min"), ("buy", "sell"),
    ("upload", "download"), ("import", "export"), ("encrypt", "decrypt"), ("open", "close"), ("start", "stop"),
    ("start", "end"), ("begin", "end"), ("include", "exclude"), ("accept", "reject"), ("true", "false"),
    ("above", "below"), ("over", "under"), ("more", "less"), ("higher", "lower"),
    ("high", "low"), ("larger", "smaller"), ("large", "small"), ("big", "small"), ("best", "worst"),
    ("good", "bad"), ("cheap", "expensive"), ("hot", "cold"), ("fast", "slow"), ("win", "lose"),
    ("push", "pull"), ("read", "write"), ("input", "output"), ("left", "right"), ("north", "south"),
    ("east", "west"), ("first", "last"), ("install", "uninstall"), ("lock", "unlock"),
    ("subscribe", "unsubscribe"), ("connect", "disconnect"), ("follow", "unfollow"), ("login", "logout"),
    ("ascending", "descending"), ("asc", "desc"), ("positive", "negative"), ("always", "never"),
    ("old", "new"), ("early", "late"), ("earlier", "later"), ("inside", "outside"), ("send", "receive"),
    ("encode", "decode"), ("compress", "decompress"), ("zip", "unzip"), ("mount", "unmount"), ("show", "hide"),
    ("visible", "hidden"), ("public", "private"), ("safe", "unsafe"), ("legal", "illegal"), ("hard", "soft"),
    ("boiling", "freezing"), ("taller", "shorter"), ("tall", "short"), ("long", "short"), ("longer", "shorter"),
    ("difference", "similarity"), ("different", "same"), ("deficiency", "overdose"), ("cancel", "schedule"),
    ("create", "delete"), ("join", "leave"), ("import", "export"), ("healthy", "unhealthy"), ("light", "dark"),
    ("light", "heavy"), ("wet", "dry"), ("full", "empty"), ("pass", "fail"), ("success", "failure"),
    ("valid", "invalid"), ("above", "under"), ("inbound", "outbound"), ("incoming", "outgoing"),
    ("ingress", "egress"), ("min", "max"), ("least", "most"), ("fewer", "more"), ("worse", "better"),
    ("plus", "minus"), ("multiply", "divide"), ("sum", "difference"), ("today", "tomorrow"), ("today", "yesterday"),
    ("celsius", "fahrenheit"), ("buy", "rent"), ("lend", "borrow"), ("debit", "credit"),
)  # fmt: skip
_POLAR: Final = frozenset(word for pair in _ANTONYM_PAIRS for word in pair)

_DIRECTIONAL: Final = {"to": "to", "into": "to", "from": "from", "than": "than", "vs": "vs", "versus": "vs"}

#: Words whose presence or absence does not change what is asked: articles, pronouns, auxiliaries, question
#: words, politeness, and request framings ("tell me", "explain", "what is the way to").
_FUNCTION_WORDS: Final = (
    frozenset(
        """a an the this that these those it its it's i me my mine we us our you your yours he she they them their his
    her is are was were be been being am do does did done doing have has had having can could would should shall
    will may might must what what's whats which who whom whose when where why how how's there here please pls
    kindly tell explain give show let lets let's know want need like help make sure just really actually exactly
    quickly briefly simply also some any anything something thing things way ways method steps step process
    procedure guide instructions command commands to of in on at for with by as and or but if then so about into
    onto upon via per using use used through able okay ok possible possibly time good idea hi hey thanks thank yes
    list calculate compute describe provide""".split()  # noqa: SIM905
    )
    - _NEGATIONS
    - frozenset(_DIRECTIONAL)
)

#: A small, generic synonym table (canonical form on the right). Kept small on purpose: every entry is a
#: claim that swapping the two words never changes an answer.
_SYNONYMS: Final = {
    "purchase": "buy", "acquire": "buy", "repair": "fix", "automobile": "car", "begin": "start",
    "launch": "start", "run": "start", "commence": "start", "finish": "end", "terminate": "stop", "halt": "stop",
    "erase": "delete", "remove": "delete", "discard": "delete", "display": "show", "reveal": "show",
    "compose": "write", "author": "writer", "wrote": "write", "written": "write", "writer": "write",
    "shares": "stock", "share": "stock", "larger": "increase", "bigger": "increase", "enlarge": "increase",
    "raise": "increase", "activate": "enable", "permit": "allow", "join": "connect",
    "calculate": "compute", "determine": "compute", "much": "many", "amount": "many", "number": "many",
    "count": "many", "daily": "day", "each": "per", "every": "per", "max": "maximum", "min": "minimum",
    "book": "schedule", "arrange": "schedule", "safely": "safe", "legally": "legal",
    "colour": "color", "german": "germany", "french": "france", "spanish": "spain", "signup": "register",
    "cellphone": "phone", "mobile": "phone", "smartphone": "phone", "pc": "computer",
}  # fmt: skip


def _stem(word: str) -> str:
    """Crude, symmetric suffix stripping: both sides go through it, so it only needs to be consistent."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 4 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _canon(word: str) -> str:
    word = _SYNONYMS.get(word, word)
    stemmed = _stem(word)
    return _SYNONYMS.get(stemmed, stemmed)


@dataclass(frozen=True, slots=True)
class _Parsed:
    words: tuple[str, ...]  # lower-cased tokens, contractions expanded
    numbers: tuple[str, ...]
    negations: int
    polar: frozenset[str]
    entities: frozenset[str]
    directions: frozenset[tuple[str, str]]
    content: frozenset[str]


def _parse(text: str) -> _Parsed:
    expanded = re.sub(r"(?i)\bcan't\b", "can not", text)
    expanded = re.sub(r"(?i)\bwon't\b", "will not", expanded)
    expanded = re.sub(r"(?i)n't\b", " not", expanded)
    expanded = re.sub(r"(?i)\b(?!(?:what|it|let|how|that|there|who|where)'s)([a-z]+)'s\b", r"\1", expanded)
    expanded = _SPLIT_UNIT_RE.sub(r"\1 \2", expanded)
    raw = _WORD_RE.findall(expanded)
    entities: set[str] = set()
    sentence_start = True
    for token in raw:
        if token[0].isdigit() or token in "%$€£":
            sentence_start = False
            continue
        letters = token.replace("'", "")
        name_like = (
            (token[0].isupper() and not sentence_start and token.lower() != "i")
            or (len(letters) > 1 and letters.isupper())
            or any(ch.isdigit() for ch in token)
        )
        if name_like:
            entities.add(token.lower())
        sentence_start = False
    for quoted in _QUOTED_RE.findall(text):
        entities.update(w.lower() for w in _WORD_RE.findall(quoted))
    words = tuple(w.lower() for w in raw)
    # In order: "15% of 80" and "80% of 15" hold the same numbers.
    numbers = [_normal_number(w) for w in words if w[0].isdigit() or w in _NUMBER_WORDS]
    negations = sum(1 for w in words if w in _NEGATIONS)
    polar = frozenset(w for w in words if w in _POLAR) | frozenset(_canon(w) for w in words if _canon(w) in _POLAR)
    directions: set[tuple[str, str]] = set()
    for index, word in enumerate(words):
        if word in _DIRECTIONAL:
            following = next((_canon(w) for w in words[index + 1 :] if w not in _FUNCTION_WORDS), "")
            directions.add((_DIRECTIONAL[word], following))
    content = frozenset(
        _canon(w)
        for w in words
        if w not in _FUNCTION_WORDS
        and w not in _NEGATIONS
        and w not in _DIRECTIONAL
        and not w[0].isdigit()
        and w not in _NUMBER_WORDS
    )
    return _Parsed(words, tuple(numbers), negations, polar, frozenset(entities), frozenset(directions), content)


def _normal_number(word: str) -> str:
    if word in _NUMBER_WORDS:
        return _NUMBER_WORDS[word]
    plain = word.replace(",", "")
    try:
        value = float(plain)
    except ValueError:
        return plain
    return str(int(value)) if value == int(value) else str(value)


class RuleVerifier:
    """``check(query, candidate)`` returns None when the candidate may answer the query, else the failed rule."""

    name = "rules"

    def check(self, query: str, candidate: str) -> str | None:
        if query == candidate:
            return None
        a, b = _parse(query), _parse(candidate)
        if a.numbers != b.numbers:
            return "numbers"
        if a.negations != b.negations:
            return "negation"
        if any(x in a.polar and y in b.polar and not (y in a.polar and x in b.polar) for x, y in _ANTONYM_PAIRS) or any(
            y in a.polar and x in b.polar and not (x in a.polar and y in b.polar) for x, y in _ANTONYM_PAIRS
        ):
            return "antonym"
        words_a = {_canon(w) for w in a.words}
        words_b = {_canon(w) for w in b.words}
        if any(_canon(e) not in words_b for e in a.entities) or any(_canon(e) not in words_a for e in b.entities):
            return "entity"
        preps_a, preps_b = {prep for prep, _ in a.directions}, {prep for prep, _ in b.directions}
        if preps_a and preps_b and preps_a != preps_b and {"to", "from"} & (preps_a ^ preps_b):
            return "direction"  # "into Spanish" vs "from Spanish"
        shared = preps_a & preps_b
        if {d for d in a.directions if d[0] in shared} != {d for d in b.directions if d[0] in shared}:
            return "direction"
        if a.content != b.content:
            return "content"
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

    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None) -> None:
        self.rules = RuleVerifier()
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
    name: str, *, judge_model: str | None = None, judge_api_base: str | None = None, judge_api_key: str | None = None
) -> RuleVerifier | NoVerifier | JudgedVerifier:
    if name == "none":
        return NoVerifier()
    if name == "rules+llm" and judge_model:
        return JudgedVerifier(judge_model, api_base=judge_api_base, api_key=judge_api_key)
    return RuleVerifier()
