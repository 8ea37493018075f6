"""Write a benchmark's section into BENCHMARKS.md, replacing the previous run of the same section."""

from __future__ import annotations

import re
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
PREAMBLE = (
    "# Benchmarks\n\nProduced by the programs in `bench/` (not by tests). Every number compares two sides "
    "measured in the same run on the same machine; rerun with `make bench`.\n"
)


def update_benchmarks(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of BENCHMARKS.md with `body`."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else PREAMBLE
    section = f"## {title}\n\n_Measured {time.strftime('%Y-%m-%d')}._\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS.write_text(text)
