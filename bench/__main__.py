"""Run one benchmark: ``python -m bench NAME [--quick]``.

Each benchmark module defines ``run(quick: bool) -> dict``; it prints its own progress and
figures, and this runner prints the returned dict as the last line, one JSON object with at
least ``name``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path


def _names() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=_names(), help="benchmark to run")
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"bench.{args.name}")
    result = module.run(args.quick)
    result.setdefault("name", args.name)
    result["quick"] = bool(args.quick)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
