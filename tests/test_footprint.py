"""Promise: the engine level's disk use stays bounded: its tests run chain by chain, a chain is released after its
last test, and the prefetch builds at most MLDT_BUILD_JOBS chains ahead (tests/helpers/footprint.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest

from helpers.answers import REPO
from helpers.combos import DEFAULT_COMBO, ENGINE_COMBOS, TEXT_COMBOS
from helpers.footprint import Footprint, chains_of, in_chain_order
from helpers.once import Once

CHAINS = ENGINE_COMBOS + TEXT_COMBOS


@dataclass
class FakeItem:
    """What helpers/footprint.py reads of a pytest item."""

    nodeid: str
    chains: list = field(default_factory=list)
    engine: bool = True

    def get_closest_marker(self, name: str):
        return name == "engine" and self.engine or None

    def iter_markers(self, name: str):
        return [pytest.mark.chain(*self.chains).mark] if name == "chain" and self.chains else []


def test_the_collected_engine_tests_run_chain_by_chain() -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "engine",
                             "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    assert len(ids) > 100, result.stdout[-2000:]
    spans = {}
    for chain in ENGINE_COMBOS[1:]:  # the text chain's tests do not name it
        at = [i for i, nodeid in enumerate(ids) if f"[{chain.id}" in nodeid or f"-{chain.id}]" in nodeid]
        assert at, f"no engine test names {chain.id}"
        spans[chain] = (at[0], at[-1])
        between = ids[at[0]:at[-1] + 1]
        others = [n for n in between if any(other.id in n for other in CHAINS if other != chain)]
        assert not others, f"{chain.id}'s tests are interleaved with another chain's: {others[:3]}"
    # the default chain (the tests that name none) first, the text chain's module as one block
    assert all(start > 0 for start, _ in spans.values())
    text = [i for i, nodeid in enumerate(ids) if nodeid.startswith("tests/test_engine_transformers.py")]
    assert text == list(range(text[0], text[-1] + 1))


def test_chains_of_a_test_and_their_order() -> None:
    other, text = ENGINE_COMBOS[1], TEXT_COMBOS[0]
    items = [FakeItem("static", engine=False), FakeItem("a"), FakeItem("b", [other]), FakeItem("c", [text]),
             FakeItem("d"), FakeItem("e", [other])]
    assert chains_of(items[1]) == [DEFAULT_COMBO] and chains_of(items[2]) == [other]
    order = in_chain_order(items)
    assert order == [DEFAULT_COMBO, other, text]
    assert [i.nodeid for i in items] == ["static", "a", "d", "b", "e", "c"]
    assert Footprint(items, 2).last == {DEFAULT_COMBO: "d", other: "e", text: "c"}


class Recording(Footprint):
    def __init__(self, *args):
        super().__init__(*args)
        self.trimmed: list = []

    def trim(self, done, kept) -> None:
        self.trimmed.append((done, kept))


def test_the_prefetch_stays_within_jobs_chains_and_a_released_chain_is_not_made_again() -> None:
    chains = CHAINS[:5]
    items = [FakeItem(f"t{i}", [chain]) for i, chain in enumerate(chains)]
    footprint = Recording(items, 2)
    most, lock = [0], threading.Lock()

    def make(chain):
        footprint.building(chain)
        with lock:
            most[0] = max(most[0], len(footprint.live))
        time.sleep(0.05)
        return chain.id

    once = Once(make)
    once.prefetch(chains, 2, footprint.wait_for_room)
    try:
        for item, chain in zip(items, chains):
            assert once(chain) == chain.id
            time.sleep(0.1)  # the prefetch has time to run ahead, if it would
            footprint.finished(item.nodeid, once)
            assert not once.ready(chain)
    finally:
        footprint.close()
        once.close()
    assert most[0] <= 2, f"{most[0]} chains built at once with jobs=2"
    assert [done for done, _ in footprint.trimmed] == [[c] for c in chains]
    assert footprint.live == set()
