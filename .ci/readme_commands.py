"""Print the README's two set-up commands, one per line: the main job, then the tests.

They are the first two ```bash blocks of the section '## Set-up: two commands'; each block must
hold exactly one command line. CI runs what this prints, so the README is what CI tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

SECTION = "## Set-up: two commands"


def setup_commands(text: str) -> list[str]:
    if SECTION not in text:
        raise SystemExit(f"README has no section {SECTION!r}")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks, current, inside = [], [], False
    for line in section.splitlines():
        if line.strip().startswith("```"):
            if inside:
                blocks.append(current)
            inside, current = not inside and line.strip() == "```bash", []
            continue
        if inside and line.strip():
            current.append(line.strip())
    if len(blocks) < 2 or any(len(block) != 1 for block in blocks[:2]):
        raise SystemExit(f"README's {SECTION!r} must open with two ```bash blocks of one "
                         f"command each; found {blocks!r}")
    return [blocks[0][0], blocks[1][0]]


if __name__ == "__main__":
    print("\n".join(setup_commands(Path(sys.argv[1]).read_text(encoding="utf-8"))))
