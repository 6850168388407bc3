"""Regenerate the parts of README.md that are command output, so they cannot drift from the code.

    python -m lowvram.docs gpu-guide           # rewrite the GPU guide table between its markers
    python -m lowvram.docs gpu-guide --check   # exit 1 if README.md's table is not current

The table sits between `<!-- gpu-guide:begin -->` and `<!-- gpu-guide:end -->`; tests/test_docs.py
compares it with `lowvram gpus --tiers --markdown`.
"""

from __future__ import annotations

import os
import sys

BEGIN, END = "<!-- gpu-guide:begin -->", "<!-- gpu-guide:end -->"
README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def guide_in(text: str) -> str:
    """The table between the markers of a README text."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n") + "\n"


def with_guide(text: str, table: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table + text[end:]


def main(argv: list[str] | None = None) -> int:
    from .guide import readme_guide

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "gpu-guide":
        sys.stderr.write("usage: python -m lowvram.docs gpu-guide [--check] [README.md]\n")
        return 2
    path = next((a for a in args[1:] if not a.startswith("-")), README)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    table = readme_guide()
    if "--check" in args:
        current = guide_in(text) == table
        print("README GPU guide is current" if current else "README GPU guide is stale: run python -m lowvram.docs gpu-guide")
        return 0 if current else 1
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(with_guide(text, table))
    os.replace(tmp, path)
    print(f"wrote the GPU guide into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
