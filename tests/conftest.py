from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from template import Combo, docker_available, engine_required, render


@pytest.fixture(scope="session")
def render_combo(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Combo], Path]:
    """Render a combination once per session, without the lock task (static checks need no locks)."""
    cache: dict[Combo, Path] = {}

    def _render(combo: Combo) -> Path:
        if combo not in cache:
            cache[combo] = render(tmp_path_factory.mktemp(combo.id), combo.answers)
        return cache[combo]

    return _render


@pytest.fixture(scope="session")
def engine() -> None:
    """A Docker engine that answers. In CI (CI=true or REQUIRE_ENGINE=1) its absence fails the run."""
    ok, why = docker_available()
    if ok:
        return
    if engine_required():
        pytest.fail(f"engine tests are required here (CI) but {why}", pytrace=False)
    pytest.skip(f"engine tests skipped: {why} (start Docker to run them)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test marked `engine` gets the engine fixture, so none can run (or silently pass) without one.
    for item in items:
        if item.get_closest_marker("engine") and "engine" not in getattr(item, "fixturenames", []):
            item.fixturenames.insert(0, "engine")
