"""The engine level's disk footprint, kept bounded. A CI machine may have only some GB free, and each chain (its
train and serve images and the build cache behind them) takes 1-4 GB: run as collected, the level held every chain
at once (about 70 GB with its build cache) and ran out of disk in CI. So the engine tests run chain by chain; after
the last test of a chain its images go, the build cache of the chains still in use is touched (a cached build, a few
seconds), and the build cache is trimmed to BUILD_CACHE_KEEP, least recently used first: what goes is the cache of
the chains that are done. The prefetch builds at most MLDT_BUILD_JOBS chains ahead of the tests (the one in use
counts). A chain asked for again after its release is built again: slower, never wrong."""

from __future__ import annotations

import os
import threading

import pytest

from helpers.combos import DEFAULT_COMBO, ENGINE_COMBOS, TEXT_COMBOS, Combo
from helpers.engine import IMAGE_PREFIX, remove_images, run

# what the trimmed build cache keeps: pip's cache mount (every wheel of every chain, about 2.5 GB, used by every build)
# and the chains in use
BUILD_CACHE_KEEP = os.environ.get("MLDT_BUILD_CACHE_KEEP", "6GB")
CHAINS = ENGINE_COMBOS + TEXT_COMBOS
# MLDT_KEEP_IMAGES=1: a developer's run that leaves every chain's images and cache (bench/text_batching.py uses one)
KEEP_IMAGES = os.environ.get("MLDT_KEEP_IMAGES") == "1"


def chains_of(item: pytest.Item) -> list[Combo]:
    """The chains an engine test uses: those its parameters name, those its `chain` markers name (a chain used
    without a parameter), else the default chain (what most engine tests use without naming it)."""
    params = getattr(getattr(item, "callspec", None), "params", {}).values()
    named = [v for v in params if v in CHAINS] + [v.combo for v in params if getattr(v, "combo", None) in CHAINS]
    named += [c for mark in item.iter_markers("chain") for c in mark.args]
    return list(dict.fromkeys(named)) or [DEFAULT_COMBO]


def in_chain_order(items: list[pytest.Item]) -> list[Combo]:
    """Sort the engine tests (in place, after the others) chain by chain, each chain's tests in their collected
    order, the chains in the order of their first test; return the chains in that order (the shared fixtures'
    chains only: those they build)."""
    order: dict[Combo, int] = {}
    for item in items:
        if item.get_closest_marker("engine"):
            order.setdefault(chains_of(item)[0], len(order))
    # a chain its own module builds (not one of CHAINS: the platforms' chain, whose arm64 stand-ins .ci/run builds
    # beside the static level) goes last
    order = {chain: rank + (0 if chain in CHAINS else len(order)) for chain, rank in order.items()}
    rank = {id(item): (1, order[chains_of(item)[0]]) if item.get_closest_marker("engine") else (0, 0)
            for item in items}
    items.sort(key=lambda item: rank[id(item)])  # stable: the collected order within a chain
    return [chain for chain in sorted(order, key=order.get) if chain in CHAINS]


class Footprint:
    """Which chains the engine tests use, the chains built and not released, and the release of a chain after its
    last test."""

    def __init__(self, items: list[pytest.Item], jobs: int):
        self.last: dict[Combo, str] = {}  # chain -> the nodeid of its last test
        for item in items:
            if item.get_closest_marker("engine"):
                for chain in chains_of(item):
                    self.last[chain] = item.nodeid
        self.jobs = max(jobs, 1)
        self.live: set[Combo] = set()  # built (or being built) and not released
        self.released: set[Combo] = set()
        self.room = threading.Condition()
        self.closed = False

    def wait_for_room(self, chain: Combo) -> bool:
        """For the prefetch: wait until fewer than `jobs` chains are live (a test's own call never waits); False
        once the session ends or the chain was released."""
        with self.room:
            self.room.wait_for(lambda: self.closed or chain in self.live or len(self.live) < self.jobs)
            if self.closed or chain in self.released:
                return False
            self.live.add(chain)
            return True

    def building(self, chain: Combo) -> None:
        with self.room:
            self.live.add(chain)

    def finished(self, nodeid: str, built) -> None:
        """After a test's teardown: release the chains whose last test it was (`built`: the built_project Once)."""
        done = [chain for chain, last in self.last.items() if last == nodeid]
        if not done:
            return
        for chain in done:
            built.forget(chain)
        with self.room:
            self.live -= set(done)
            self.released |= set(done)
            kept = [built(chain) for chain in self.live if built.ready(chain)]
        self.trim(done, kept)
        with self.room:
            self.room.notify_all()

    def trim(self, done: list[Combo], kept: list) -> None:
        """The released chains' images go; the build cache of the chains `kept` is touched (just used: the trim
        takes the released chains' cache first), and the cache is trimmed to BUILD_CACHE_KEEP."""
        if KEEP_IMAGES:
            return
        for chain in done:
            remove_images(f"{IMAGE_PREFIX}/{chain.id}")
        for built in kept:
            built.touch()
        run(["docker", "builder", "prune", "--force", "--keep-storage", BUILD_CACHE_KEEP], timeout=600)
        run(["docker", "image", "prune", "--force"], check=False)  # images whose tag a rebuild moved on

    def close(self) -> None:
        with self.room:
            self.closed = True
            self.room.notify_all()
