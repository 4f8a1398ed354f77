"""What the verifier reads out of a question: its frame (question word, person, tense, modality), its numbers,
negations, polar words, names and content words.

Why a frame: an embedding of "Where is my girlfriend?" sits next to "Who is my girlfriend?", and "How did you
steal bitcoins?" next to "How can I steal bitcoins?": they share every content word, so no similarity threshold
separates them, yet each asks something else. The frame words are few and closed-class, so they are listed here;
the open-class (content) words are compared by meaning in :mod:`.verifier`, not through a table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_WORD_RE: Final = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z]+(?:'[A-Za-z]+)?|[%$€£]")
_QUOTED_RE: Final = re.compile('["`\u201c]([^"`\u201d]{1,80})["`\u201d]')
_SPLIT_UNIT_RE: Final = re.compile(r"(\d)([A-Za-z%])")

NUMBER_WORDS: Final = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000", "dozen": "12",
    "twice": "2", "half": "0.5", "double": "2", "triple": "3",
}  # fmt: skip

NEGATIONS: Final = frozenset(
    {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot", "nowhere"}
)

#: Question words, folded where they ask the same thing ("which" = "what", "whom" = "who").
_QUESTION_WORDS: Final = {
    "what": "what", "which": "what", "who": "who", "whom": "who", "whose": "whose", "where": "where",
    "when": "when", "why": "why", "how": "how",
}  # fmt: skip
#: "how many" / "how much" / "how long" ask for a quantity, not a manner.
_HOW_QUANTITY: Final = frozenset({"many", "much", "long", "far", "old", "big", "often", "tall"})
#: Words a request may open with before its question ("Please, can I ...", "So is it ...").
_FILLERS: Final = frozenset(
    [
        "please",
        "pls",
        "kindly",
        "so",
        "ok",
        "okay",
        "hey",
        "hi",
        "hello",
        "well",
        "now",
        "then",
        "and",
        "but",
        "also",
        "quick",
        "question",
    ]
)
_YES_NO_OPENERS: Final = frozenset(
    [
        "is",
        "are",
        "am",
        "was",
        "were",
        "do",
        "does",
        "did",
        "can",
        "could",
        "should",
        "would",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
    ]
)

#: Grammatical person (a generic "one" / no pronoun at all constrains nothing).
_PERSON: Final = {
    **dict.fromkeys(("i", "me", "my", "mine", "myself"), "1s"),
    **dict.fromkeys(("we", "us", "our", "ours", "ourselves"), "1p"),
    **dict.fromkeys(("you", "your", "yours", "yourself", "yourselves", "u", "ur"), "2"),
    **dict.fromkeys(("he", "him", "his", "himself", "she", "her", "hers", "herself"), "3s"),
    **dict.fromkeys(("they", "them", "their", "theirs", "themselves"), "3p"),
}
_PAST: Final = frozenset({"did", "was", "were", "had", "didn't", "wasn't", "weren't"})
_FUTURE: Final = frozenset({"will", "shall", "gonna", "won't"})
#: Modality classes: obligation/advice vs ability/possibility ("Should I buy?" is not "Can I buy?").
_OBLIGATION: Final = frozenset({"should", "must", "ought", "shouldn't", "mustn't"})

ANTONYM_PAIRS: Final = (
    ("enable", "disable"), ("allow", "block"), ("allow", "deny"), ("increase", "decrease"),
    ("add", "remove"), ("before", "after"), ("maximum", "minimum"), ("max", "min"), ("buy", "sell"),
    ("upload", "download"), ("import", "export"), ("encrypt", "decrypt"), ("open", "close"), ("start", "stop"),
    ("start", "end"), ("begin", "end"), ("include", "exclude"), ("accept", "reject"), ("true", "false"),
    ("above", "below"), ("over", "under"), ("more", "less"), ("higher", "lower"), ("high", "low"),
    ("larger", "smaller"), ("large", "small"), ("big", "small"), ("best", "worst"), ("good", "bad"),
    ("cheap", "expensive"), ("hot", "cold"), ("fast", "slow"), ("win", "lose"), ("push", "pull"),
    ("read", "write"), ("input", "output"), ("left", "right"), ("north", "south"), ("east", "west"),
    ("first", "last"), ("install", "uninstall"), ("lock", "unlock"), ("subscribe", "unsubscribe"),
    ("connect", "disconnect"), ("follow", "unfollow"), ("login", "logout"), ("ascending", "descending"),
    ("positive", "negative"), ("always", "never"), ("old", "new"), ("early", "late"), ("earlier", "later"),
    ("inside", "outside"), ("send", "receive"), ("encode", "decode"), ("compress", "decompress"),
    ("show", "hide"), ("public", "private"), ("safe", "unsafe"), ("legal", "illegal"), ("tall", "short"),
    ("long", "short"), ("create", "delete"), ("join", "leave"), ("light", "dark"), ("light", "heavy"),
    ("wet", "dry"), ("full", "empty"), ("pass", "fail"), ("success", "failure"), ("valid", "invalid"),
    ("least", "most"), ("fewer", "more"), ("worse", "better"), ("plus", "minus"), ("multiply", "divide"),
    ("today", "tomorrow"), ("today", "yesterday"), ("celsius", "fahrenheit"), ("lend", "borrow"),
    ("debit", "credit"), ("man", "woman"), ("men", "women"), ("boy", "girl"), ("male", "female"),
    ("husband", "wife"), ("father", "mother"), ("son", "daughter"), ("brother", "sister"), ("up", "down"),
    ("love", "hate"), ("like", "dislike"), ("rich", "poor"), ("strong", "weak"), ("happy", "sad"),
)  # fmt: skip
POLAR: Final = frozenset(word for pair in ANTONYM_PAIRS for word in pair)

DIRECTIONAL: Final = {"to": "to", "into": "to", "from": "from", "than": "than", "vs": "vs", "versus": "vs"}

#: Closed-class words and request framings: they carry the frame above or nothing at all, never content.
FUNCTION_WORDS: Final = (
    frozenset(
        """a an the this that these those it its it's i me my mine myself we us our ours you your yours he him his
    she her hers they them their theirs is are was were be been being am do does did done doing have has had
    having can could would should shall will may might must ought what what's whats which who whom whose when
    where why how how's there here please pls kindly tell explain give let lets let's know want need like help
    just really actually exactly also some any anything something thing things way ways to of in on at for with
    by as and or but if then so about into onto upon via per through okay ok hi hey thanks thank yes one ones
    someone anyone people person get got getting make makes making go going gonna possible possibly best good
    is isn't aren't doesn't don't didn't can't won't wouldn't couldn't shouldn't other another much many very
    more most such even ever still already again u ur im i'm""".split()  # noqa: SIM905
    )
    - NEGATIONS
    - frozenset(DIRECTIONAL)
    - POLAR
)


@dataclass(frozen=True, slots=True)
class Parsed:
    words: tuple[str, ...]  # lower-cased tokens, contractions expanded
    questions: frozenset[str]
    persons: frozenset[str]
    past: bool
    future: bool
    obligation: bool
    numbers: tuple[str, ...]
    negations: int
    polar: frozenset[str]
    names: frozenset[str]
    directions: frozenset[tuple[str, str]]
    content: frozenset[str]


def stem(word: str) -> str:
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


def _expand(text: str) -> str:
    out = re.sub(r"(?i)\bcan't\b", "can not", text)
    out = re.sub(r"(?i)\bwon't\b", "will not", out)
    out = re.sub(r"(?i)\bain't\b", "is not", out)
    out = re.sub(r"(?i)(\w)n't\b", r"\1 not", out)
    out = re.sub(r"(?i)\b(i)'m\b", r"\1 am", out)
    out = re.sub(r"(?i)'(ve|ll|re|d)\b", lambda m: {"ve": " have", "ll": " will", "re": " are", "d": " would"}[
        m.group(1).lower()], out)  # fmt: skip
    out = re.sub(r"(?i)\b([a-z]+)'s\b", r"\1", out)  # possessive / "is": the frame does not hinge on it
    return _SPLIT_UNIT_RE.sub(r"\1 \2", out)


def _questions(words: tuple[str, ...]) -> frozenset[str]:
    found: set[str] = set()
    for index, word in enumerate(words):
        kind = _QUESTION_WORDS.get(word)
        if kind is None:
            continue
        if kind == "how" and index + 1 < len(words) and words[index + 1] in _HOW_QUANTITY:
            kind = "how_" + words[index + 1]
        found.add(kind)
    opener = next((w for w in words if w not in _FILLERS), "")
    if not found and opener in _YES_NO_OPENERS:
        found.add("yes_no")
    return frozenset(found)


def parse(text: str) -> Parsed:
    raw = _WORD_RE.findall(_expand(text))
    names: set[str] = set()
    sentence_start = True
    for token in raw:
        if token[0].isdigit() or token in "%$€£":
            sentence_start = False
            continue
        letters = token.replace("'", "")
        if (
            (token[0].isupper() and not sentence_start and token.lower() != "i")
            or (len(letters) > 1 and letters.isupper())
            or any(ch.isdigit() for ch in token)
        ):
            names.add(token.lower())
        sentence_start = False
    for quoted in _QUOTED_RE.findall(text):
        names.update(w.lower() for w in _WORD_RE.findall(quoted))
    words = tuple(w.lower() for w in raw)
    directions: set[tuple[str, str]] = set()
    for index, word in enumerate(words):
        if word in DIRECTIONAL:
            following = next((stem(w) for w in words[index + 1 :] if w not in FUNCTION_WORDS), "")
            directions.add((DIRECTIONAL[word], following))
    return Parsed(
        words=words,
        questions=_questions(words),
        persons=frozenset(_PERSON[w] for w in words if w in _PERSON),
        past=any(w in _PAST for w in words),
        future=any(w in _FUTURE for w in words) or "going to" in " ".join(words),
        obligation=any(w in _OBLIGATION for w in words),
        numbers=tuple(_normal_number(w) for w in words if w[0].isdigit() or w in NUMBER_WORDS),
        negations=sum(1 for w in words if w in NEGATIONS),
        polar=frozenset(w for w in words if w in POLAR) | frozenset(stem(w) for w in words if stem(w) in POLAR),
        names=frozenset(names - FUNCTION_WORDS),
        directions=frozenset(directions),
        content=frozenset(
            w
            for w in words
            if w not in FUNCTION_WORDS
            and w not in NEGATIONS
            and w not in DIRECTIONAL
            and not w[0].isdigit()
            and w not in NUMBER_WORDS
            and w not in "%$€£"
        ),
    )


def _normal_number(word: str) -> str:
    if word in NUMBER_WORDS:
        return NUMBER_WORDS[word]
    plain = word.replace(",", "")
    try:
        value = float(plain)
    except ValueError:
        return plain
    return str(int(value)) if value == int(value) else str(value)
