"""The template's lock modules (template/scripts/lock*.py), imported by name as a project's scripts import each other;
their folder is on sys.path only while they load (it also holds dotenv.py, which would shadow python-dotenv)."""

from __future__ import annotations

import sys

from helpers.answers import REPO

SCRIPTS = REPO / "template" / "scripts"

sys.path.insert(0, str(SCRIPTS))
try:
    import lock
    import lock_compile
    import lock_engine
    import lock_files
    import lock_index
    import lock_stamp
finally:
    sys.path.remove(str(SCRIPTS))

__all__ = ["SCRIPTS", "lock", "lock_compile", "lock_engine", "lock_files", "lock_index", "lock_stamp"]
