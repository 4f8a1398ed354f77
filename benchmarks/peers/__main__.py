"""``python benchmarks/peers SECTION`` (or ``python -m peers`` with ``benchmarks/`` on the path)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a directory, Python puts benchmarks/peers itself first on the path; the package needs its parent.
    bench = str(Path(__file__).resolve().parent.parent)
    sys.path[:] = [bench, *(p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent)]
    from peers import main

    sys.exit(main())
