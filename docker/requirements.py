#!/usr/bin/env python3
"""Print pip requirement lines taken from pyproject.toml, for the image builds.

The images install dependencies from the project's own pins (one source of truth) in a
layer of their own, before the code is copied in, so a code change never reinstalls them.

    requirements.py PYPROJECT [--core] [--extra NAME]... [--only NAME,...] [--exclude NAME,...]

--core        the project's [project.dependencies]
--extra NAME  an optional-dependency group (repeatable)
--only        keep just these distributions (by name, case/underscore-insensitive)
--exclude     drop these distributions
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib


def _name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else ""


def _names(csv: str | None) -> set[str]:
    return {_name(n) for n in (csv or "").split(",") if n.strip()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pyproject")
    ap.add_argument("--core", action="store_true")
    ap.add_argument("--extra", action="append", default=[])
    ap.add_argument("--only")
    ap.add_argument("--exclude")
    args = ap.parse_args(argv)
    with open(args.pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    reqs: list[str] = list(project.get("dependencies", [])) if args.core else []
    extras = project.get("optional-dependencies", {})
    for extra in args.extra:
        if extra not in extras:
            print(f"requirements.py: no extra {extra!r} in {args.pyproject}", file=sys.stderr)
            return 2
        reqs += extras[extra]
    only, exclude = _names(args.only), _names(args.exclude)
    missing = only - {_name(r) for r in reqs}
    if missing:
        print(f"requirements.py: not found in the selected groups: {sorted(missing)}", file=sys.stderr)
        return 2
    for r in reqs:
        n = _name(r)
        if (only and n not in only) or n in exclude:
            continue
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
