"""Run every benchmark module, or those named on the command line: `python -m bench conform providers`."""

import importlib
import pkgutil
import sys

import bench

STANDALONE = {"chaos"}  # `make chaos`: minutes of SIGKILLs are a check, not a benchmark


def main() -> None:
    names = sys.argv[1:] or sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_") and m.name not in STANDALONE
    )
    for name in names:
        print(f"== bench.{name}", flush=True)
        importlib.import_module(f"bench.{name}").main()


if __name__ == "__main__":
    main()
