"""What the CI log shows after the tests: which renders and chains cover which answers, and where build time went."""

from __future__ import annotations

import json

from helpers.combos import ENGINE_COMBOS, LOCK_TOOL_TWINS, PAIRWISE_COMBOS, engine_carriers, unbuildable_values
from helpers.engine import BUILD_LOG
from helpers.pairs import allowed_pairs, pairs_of, refused_pairs


def coverage_lines() -> list[str]:
    covered = set().union(*(pairs_of(c.__dict__) for c in PAIRWISE_COMBOS)) & allowed_pairs()
    lines = [f"static: {len(PAIRWISE_COMBOS)} renders hold {len(covered)} of the {len(allowed_pairs())} allowed pairs "
             "of answer values; refused by the validators:"]
    lines += [f"  {a[0]}={a[1]} + {b[0]}={b[1]}: {why}" for (a, b), why in sorted(refused_pairs().items(), key=str)]
    lines.append(f"engine: {len(ENGINE_COMBOS)} chains built, trained and served (+ {len(LOCK_TOOL_TWINS)} locked "
                 "only, the uv twins); each value and its chains:")
    exempt = unbuildable_values()
    for (question, value), chains in engine_carriers().items():
        carried = ", ".join(c.id for c in chains) or ("static-only (tests/helpers/combos.py: NOT_BUILDABLE)"
                                                     if (question, value) in exempt else "NONE")
        lines.append(f"  {question}={value}: {carried}")
    return lines


def build_lines() -> list[str]:
    if not BUILD_LOG.is_file():
        return ["no builds in this run"]
    entries = [json.loads(line) for line in BUILD_LOG.read_text().splitlines() if line.strip()]
    total = sum(e["seconds"] for e in entries)
    lines = [f"{len(entries)} builds and locks, {total:.0f} s in all (slowest first):"]
    lines += [f"  {e['seconds']:8.1f} s  {e['what']}" for e in sorted(entries, key=lambda e: -e["seconds"])]
    return lines
