"""Pairwise coverage of the choice and boolean questions, computed from copier.yml: which pairs of values the
validators allow (and which they refuse, with their message), and a small set of answer rows that holds every
allowed pair. A new choice, question or validator changes the pairs by itself."""

from __future__ import annotations

import functools
import itertools
from typing import Any, Iterable

from helpers.answers import CHOICE_QUESTIONS, choices, complete, referenced, refusals

Pair = tuple[tuple[str, Any], tuple[str, Any]]
Row = dict[str, Any]  # question -> value; None where the question is not asked

# Questions that a validator or a `when` ties to others; the rest combine freely with everything
CONSTRAINED = [q for q in CHOICE_QUESTIONS
               if referenced(q) - {q} or any(q in referenced(other) for other in CHOICE_QUESTIONS if other != q)]
FREE = [q for q in CHOICE_QUESTIONS if q not in CONSTRAINED]


def pairs_of(row: Row) -> set[Pair]:
    asked = [(q, row[q]) for q in CHOICE_QUESTIONS if row.get(q) is not None]
    return {(a, b) for a, b in itertools.combinations(asked, 2)}


def _given(row: Row) -> dict[str, Any]:
    return {q: v for q, v in row.items() if v is not None}


@functools.lru_cache(maxsize=1)
def constrained_rows() -> tuple[list[Row], list[Row]]:
    """(allowed, refused) assignments of the constrained questions, a question None where it is not asked."""
    rows: list[Row] = [{}]
    for question in CONSTRAINED:
        grown = []
        for row in rows:
            if question in complete(_given(row)):
                grown += [{**row, question: value} for value in choices(question)]
            else:
                grown.append({**row, question: None})
        rows = grown
    allowed = [row for row in rows if not refusals(_given(row))]
    refused = [row for row in rows if refusals(_given(row))]
    return allowed, refused


@functools.lru_cache(maxsize=1)
def allowed_pairs() -> frozenset[Pair]:
    allowed, _ = constrained_rows()
    found: set[Pair] = set()
    for row in allowed:
        found |= pairs_of(row)
    values = {(q, row[q]) for row in allowed for q in CONSTRAINED if row[q] is not None}
    free_values = [(q, v) for q in FREE for v in choices(q)]
    order = {q: i for i, q in enumerate(CHOICE_QUESTIONS)}
    for a, b in itertools.product(values, free_values):
        found.add((a, b) if order[a[0]] < order[b[0]] else (b, a))
    for a, b in itertools.combinations(free_values, 2):
        if a[0] != b[0]:
            found.add((a, b))
    return frozenset(found)


def refused_pairs() -> dict[Pair, str]:
    """Pairs of offered values that no allowed answers hold, each with the validator's message (its first)."""
    allowed = allowed_pairs()
    _, refused = constrained_rows()
    said: dict[Pair, str] = {}
    # the answers refused for the fewest reasons first: their message is the one about this pair
    for reasons, row in sorted(((refusals(_given(row)), row) for row in refused), key=lambda r: len(r[0])):
        for pair in sorted(pairs_of(row) - allowed, key=str):
            if pair not in said:
                question, message = next(iter(reasons.items()))
                said[pair] = f"{question}: {message}"
    return said


def covering_rows(start: Iterable[Row] = ()) -> list[Row]:
    """Rows (full answers of the choice questions) that hold every allowed pair, greedily: `start` first, then each
    new row begins from the first pair still uncovered and takes, question by question, the value that covers most."""
    allowed_rows, _ = constrained_rows()
    uncovered = set(allowed_pairs())
    rows: list[Row] = []
    for row in start:
        rows.append(row)
        uncovered -= pairs_of(row)
    while uncovered:
        seed = dict(min(uncovered, key=str))
        fits = [r for r in allowed_rows if all(r[q] == v for q, v in seed.items() if q in r)]
        base = max(fits, key=lambda r: (len(pairs_of(r) & uncovered), -allowed_rows.index(r)))
        row = dict(base)
        for question in FREE:
            if question in seed:
                row[question] = seed[question]
                continue
            row[question] = max(choices(question), key=lambda v: (
                len(pairs_of({**row, question: v}) & uncovered),
                sum(1 for p in uncovered if (question, v) in p)))
        assert pairs_of(row) & uncovered, f"covering_rows made no progress on {seed}"
        rows.append(row)
        uncovered -= pairs_of(row)
    return rows
