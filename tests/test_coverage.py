"""Promise: the suite's answer sets are computed from copier.yml and hold what they claim. Statically, every pair of
values of the choice and boolean questions that the validators allow is rendered (and checked by the static tests);
on the engine, every value this machine can build is built, trained and served by some chain. The tables are in
every run's summary (tests/helpers/report.py)."""

from __future__ import annotations

from dataclasses import replace

from helpers.answers import CHOICE_QUESTIONS, choices, refusals
from helpers.combos import (COMBOS, DEFAULT_COMBO, ENGINE_COMBOS, LOCK_TOOL_TWINS, NOT_BUILDABLE, PAIRWISE_COMBOS,
                            allowed, engine_carriers, unbuildable_values)
from helpers.pairs import allowed_pairs, constrained_rows, pairs_of, refused_pairs


def test_the_pairwise_renders_hold_every_allowed_pair_and_are_all_rendered() -> None:
    assert PAIRWISE_COMBOS[0] == DEFAULT_COMBO
    assert all(allowed(c) for c in PAIRWISE_COMBOS), [refusals(c.answers) for c in PAIRWISE_COMBOS if not allowed(c)]
    held = set().union(*(pairs_of(c.__dict__) for c in PAIRWISE_COMBOS))
    missing = allowed_pairs() - held
    assert not missing, f"no render holds {sorted(missing, key=str)[:5]}"
    assert set(PAIRWISE_COMBOS) <= set(COMBOS), "the static checks read COMBOS: the pairwise renders belong to it"
    # every question's every value is in some pair, unless the validators refuse it everywhere
    values = {v for pair in allowed_pairs() for v in pair}
    assert values == {(q, v) for q in CHOICE_QUESTIONS for v in choices(q)}


def test_a_refused_pair_is_refused_by_a_validator_and_listed_with_its_message() -> None:
    refused = refused_pairs()
    assert refused and not set(refused) & allowed_pairs()
    allowed_rows, _ = constrained_rows()
    for (a, b), why in refused.items():
        assert not any(row.get(a[0]) == a[1] and row.get(b[0]) == b[1] for row in allowed_rows), (a, b)
        question, _, message = why.partition(": ")
        assert question in CHOICE_QUESTIONS and message, why


def test_every_value_is_built_and_run_on_the_engine_unless_this_machine_cannot_build_it() -> None:
    exempt = unbuildable_values()
    for question, values in NOT_BUILDABLE.items():
        assert {(question, v) for v in values} <= exempt, "NOT_BUILDABLE names a value some chain could build"
    for (question, value), chains in engine_carriers().items():
        assert chains or (question, value) in exempt, f"{question}={value} is built by no chain: add it to one"
    for combo in ENGINE_COMBOS:
        assert allowed(combo) and combo.buildable, combo.id
    assert len(set(ENGINE_COMBOS)) == len(ENGINE_COMBOS)


def test_pip_tools_stays_the_default_and_uv_twins_prove_equal_pins() -> None:
    assert DEFAULT_COMBO.lock_tool == "pip-tools" and DEFAULT_COMBO in ENGINE_COMBOS
    for twin in LOCK_TOOL_TWINS:
        assert twin.lock_tool == "uv"
        assert replace(twin, lock_tool="pip-tools") in ENGINE_COMBOS
    assert {t.framework for t in LOCK_TOOL_TWINS} >= {DEFAULT_COMBO.framework, "pytorch"}
