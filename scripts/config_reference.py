"""Write the config reference table into README.md (between the config-reference markers).

Usage: python scripts/config_reference.py [--check]   (--check: exit 1 if the README is stale)
"""

from __future__ import annotations

import sys
from pathlib import Path

from nafrestore.config import config_reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def render(text: str) -> str:
    """The README text with the table between the markers replaced by the current one."""
    head, sep1, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not (sep1 and sep2):
        raise SystemExit(f"{README} lacks the markers {START} ... {END}")
    return f"{head}{START}\n{config_reference_markdown()}{END}{tail}"


def main() -> int:
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in sys.argv[1:]:
        if new != text:
            print("README.md's config reference is stale: run python scripts/config_reference.py")
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
