"""Promise: the HTTP API is a contract. Every render publishes the OpenAPI document recorded in tests/fixtures/openapi
(made from the release before the serving package's reorganisation); a change to the API on purpose updates the
fixture in the same commit: `MLDT_WRITE_OPENAPI=1 pytest -n0 tests/test_openapi.py` (one process: it writes one index)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest

from helpers.combos import PAIRWISE_COMBOS, Combo
from helpers.openapi import FIXTURES, digest, openapi_of

INDEX = FIXTURES / "index.json"
WRITE = os.environ.get("MLDT_WRITE_OPENAPI") == "1"


@pytest.mark.parametrize("combo", PAIRWISE_COMBOS, ids=lambda c: c.id)
def test_openapi_document_is_unchanged(render_combo: Callable[[Combo], Path], combo: Combo) -> None:
    document = openapi_of(render_combo(combo))
    if WRITE:
        name = f"{digest(document)}.json"
        (FIXTURES / name).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        index = json.loads(INDEX.read_text()) if INDEX.is_file() else {}
        INDEX.write_text(json.dumps({**index, combo.id: name}, indent=2, sort_keys=True) + "\n")
        return
    index = json.loads(INDEX.read_text())
    assert combo.id in index, f"no recorded document for {combo.id}: MLDT_WRITE_OPENAPI=1 records it"
    expected = json.loads((FIXTURES / index[combo.id]).read_text())
    assert document == expected, f"the API of {combo.id} changed (compare with {FIXTURES / index[combo.id]})"
