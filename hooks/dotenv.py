#!/usr/bin/env python3
"""Write the machine-specific settings of .env: the host user's uid/gid and generated secrets.

Shipped into every generated project as scripts/dotenv.py: Copier runs it once after `copier copy`, and
`make env` (or `python3 scripts/dotenv.py`) runs it on a fresh clone, since .env is never committed.

- HOST_UID / HOST_GID: the containers that write into bind-mounted folders (train writes ./models) run as this
  user, so the files belong to you and the container can write whatever your uid is (1000 on most Linux desktops).
- Generated secrets (JUPYTER_TOKEN, when the project has the notebook): random, only in .env, never in an image.

A missing .env starts as a copy of .env.example. A value already set in .env is never changed. Standard library only.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path

GENERATED = ("JUPYTER_TOKEN",)  # filled with a random token when .env.example lists them


def assigned(text: str) -> dict[str, str]:
    """KEY=value lines that are set (not commented out)."""
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))


def wanted(example: str) -> dict[str, str]:
    values = {"HOST_UID": str(os.getuid()), "HOST_GID": str(os.getgid())} if hasattr(os, "getuid") else {}
    listed = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE)
    values.update({key: secrets.token_hex(24) for key in GENERATED if key in listed})
    return values


def fill(text: str, values: dict[str, str]) -> tuple[str, list[str]]:
    """Set each key that is unset or empty; returns the new text and the keys it set."""
    current = assigned(text)
    changed = []
    for key, value in values.items():
        if current.get(key):
            continue
        line = f"{key}={value}"
        pattern = re.compile(rf"^#?\s*{key}=.*$", flags=re.MULTILINE)
        if pattern.search(text):  # the documented line of .env.example: fill it in place
            text = pattern.sub(line, text, count=1)
        else:
            text = text.rstrip("\n") + f"\n{line}\n"
        changed.append(key)
    return text, changed


def main() -> int:
    root = Path.cwd()
    example_path, env_path = root / ".env.example", root / ".env"
    if not example_path.is_file():
        print("dotenv: run me from the project root (.env.example not found)", file=sys.stderr)
        return 2
    example = example_path.read_text()
    text = env_path.read_text() if env_path.is_file() else example
    text, changed = fill(text, wanted(example))
    if changed or not env_path.is_file():
        env_path.write_text(text)
        env_path.chmod(0o600)  # it may hold tokens
    print(f"dotenv: .env {'sets ' + ', '.join(changed) if changed else 'already has every machine setting'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
