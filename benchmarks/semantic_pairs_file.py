"""Any labelled pair file as a set for ``benchmarks/semantic.py --pairs FILE``: a held-out sample measured with the
same code as the sets in ``semantic_data``, by whoever holds it (the project never reads it).

A CSV or TSV file (the delimiter is sniffed from the header line) with a header naming the two texts and the label:
``question1``/``question2``/``is_duplicate`` (the layout of the public Quora Question Pairs release), or
``sentence1``/``sentence2``/``label``, ``text1``/``text2``/``label``, ``a``/``b``/``label``. A label of ``1``,
``true`` or ``yes`` is a duplicate, ``0``, ``false`` or ``no`` is not; a row with an empty text or any other label
is skipped and counted. The set is named after the file's stem.
"""

from __future__ import annotations

import csv
from pathlib import Path

from semantic_data import Pair

_COLUMNS = (
    ("question1", "question2", "is_duplicate"),
    ("sentence1", "sentence2", "label"),
    ("text1", "text2", "label"),
    ("a", "b", "label"),
)
_YES = frozenset({"1", "true", "yes"})
_NO = frozenset({"0", "false", "no"})


class PairsFileError(ValueError):
    """The file is not a labelled pair file this loader reads; the message says what to change."""


def load_pairs_file(path: Path) -> tuple[list[Pair], int]:
    """``(pairs, skipped rows)`` of ``path``."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
        delimiter = "\t" if header.count("\t") >= header.count(",") else ","
        names = [name.strip().lower() for name in next(csv.reader([header], delimiter=delimiter))]
        columns = next((c for c in _COLUMNS if set(c) <= set(names)), None)
        if columns is None:
            raise PairsFileError(
                f"{path}: the header {names} names none of the known layouts; name the columns "
                + " or ".join("/".join(c) for c in _COLUMNS)
            )
        first, second, label = (names.index(c) for c in columns)
        pairs: list[Pair] = []
        skipped = 0
        for row in csv.reader(handle, delimiter=delimiter):
            if len(row) <= max(first, second, label):
                skipped += 1
                continue
            a, b, flag = row[first].strip(), row[second].strip(), row[label].strip().lower()
            if not a or not b or flag not in _YES | _NO:
                skipped += 1
                continue
            pairs.append(Pair(a, b, flag in _YES))
    return pairs, skipped
