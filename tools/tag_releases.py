#!/usr/bin/env python3
"""Tag every `Release X.Y.Z` commit that has no tag yet: Copier updates a project between these tags and runs the
migrations of the releases in between (copier.yml `_migrations`); without tags every user tracks HEAD.

    python3 tools/tag_releases.py                 # tag the releases on HEAD's history, here
    python3 tools/tag_releases.py --push origin   # ...and push the new tags (what .github/workflows/release.yml runs)
    python3 tools/tag_releases.py --dry-run       # only say what it would tag

Each tag is annotated, `X.Y.Z` with the message `Release X.Y.Z`, on the commit whose subject is exactly that. A
release commit must list its version in its own CHANGELOG.md; a version with two release commits, or a tag that
points elsewhere, stops everything with one line (a tag users updated to is never moved). Exit 0 when all is tagged.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

SUBJECT = re.compile(r"^Release (\d+\.\d+\.\d+)$")


class Refused(Exception):
    """A release that cannot be tagged as it is: one line saying why."""


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check, timeout=600)


def release_commits(repo: Path, ref: str) -> dict[str, str]:
    """{version: commit} of the `Release X.Y.Z` commits on ref's history, oldest first."""
    found: dict[str, str] = {}
    log = git("log", "--reverse", "--format=%H %s", ref, cwd=repo).stdout
    for commit, _, subject in (line.partition(" ") for line in log.splitlines()):
        match = SUBJECT.match(subject)
        if not match:
            continue
        version = match.group(1)
        if version in found:
            raise Refused(f"release {version} has two commits, {found[version][:12]} and {commit[:12]}: "
                          "reword one (git log --grep '^Release ')")
        changelog = git("show", f"{commit}:CHANGELOG.md", cwd=repo, check=False).stdout
        if not re.search(rf"^## {re.escape(version)} - ", changelog, re.MULTILINE):
            raise Refused(f"commit {commit[:12]} 'Release {version}' has no '## {version} - <date>' heading in its "
                          "CHANGELOG.md: not tagged")
        found[version] = commit
    return found


def tagged_commit(repo: Path, version: str) -> str | None:
    found = git("rev-parse", "-q", "--verify", f"refs/tags/{version}^{{commit}}", cwd=repo, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def untagged(repo: Path, releases: dict[str, str]) -> list[str]:
    """The versions still to tag; refuses a tag that names another commit."""
    todo = []
    for version, commit in releases.items():
        tagged = tagged_commit(repo, version)
        if tagged is None:
            todo.append(version)
        elif tagged != commit:
            raise Refused(f"tag {version} points at {tagged[:12]}, not at 'Release {version}' ({commit[:12]}): "
                          "tags are never moved, a maintainer must look")
    return todo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", default="HEAD", help="whose history to tag (default HEAD)")
    parser.add_argument("--push", metavar="REMOTE", help="push the new tags to REMOTE")
    parser.add_argument("--dry-run", action="store_true", help="say what would be tagged, tag nothing")
    parser.add_argument("-C", dest="repo", type=Path, default=Path.cwd(), help="the repository (default: here)")
    args = parser.parse_args(argv)
    try:
        releases = release_commits(args.repo, args.ref)
        todo = untagged(args.repo, releases)
    except Refused as error:
        print(f"tag_releases: {error}", file=sys.stderr)
        return 1
    for version in todo:
        if args.dry_run:
            print(f"would tag {version} on {releases[version][:12]}")
            continue
        git("tag", "-a", version, "-m", f"Release {version}", releases[version], cwd=args.repo)
        print(f"tagged {version} on {releases[version][:12]}")
    if args.push and todo and not args.dry_run:
        # refs/tags/... explicitly: a branch of the same name must not be pushed instead
        git("push", args.push, *(f"refs/tags/{v}" for v in todo), cwd=args.repo)
        print(f"pushed {', '.join(todo)} to {args.push}")
    if not todo:
        print(f"every release is tagged ({', '.join(releases) or 'none yet'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
