"""README.md is executable documentation: every Python block runs, in order, in one namespace,
and every number a comment states is the number the code prints.

The convention (for whoever edits the README): a `print(...)` line may end in a comment that
starts with what it prints, e.g. `print(a, b)   # 0.0076 'optimal': what these are`. The
expected text is the comment up to the first ':' or ' (' ; its words must match the printed ones
(quotes aside) and its numbers must agree with the printed ones to two significant digits.
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
FENCE = re.compile(r"^```(\w*)\s*$")


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of `language`; a fence line must hold nothing but the fence."""
    blocks, current, inside = [], [], None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            match = FENCE.match(line)
            if match is None:
                raise AssertionError(f"README.md line {number}: a fence with text after it: "
                                     f"{line!r} (renders everything after it as code)")
            if inside is None:
                inside, current = match.group(1), []
            else:
                if inside == language:
                    blocks.append("\n".join(current))
                inside = None
            continue
        if inside is not None:
            current.append(line)
    assert inside is None, "README.md ends inside a code block"
    return blocks


def expected_text(comment: str) -> str:
    """What a print's comment says it prints: the text before the first ':' or ' ('."""
    cut = len(comment)
    for marker in (":", " ("):
        where = comment.find(marker)
        if where >= 0:
            cut = min(cut, where)
    return comment[:cut].strip()


def two_digits(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, 1 - math.floor(math.log10(abs(value))))


def same_output(printed: str, expected: str) -> bool:
    """Words equal (quotes and brackets aside), numbers equal to two significant digits."""
    def split(text: str) -> tuple[list[str], list[float]]:
        numbers = [float(n) for n in NUMBER.findall(text)]
        words = NUMBER.sub(" ", text).replace("'", " ").replace('"', " ")
        words = re.sub(r"[\[\]\(\),]", " ", words).split()
        return words, numbers

    printed_words, printed_numbers = split(printed)
    expected_words, expected_numbers = split(expected)
    return (printed_words == expected_words and len(printed_numbers) == len(expected_numbers)
            and all(two_digits(a) == two_digits(b)
                    for a, b in zip(printed_numbers, expected_numbers, strict=True)))


def stated_prints(block: str) -> list[tuple[int, str]]:
    """(line number, expected text) of each top-level print whose line carries a comment."""
    lines = block.splitlines()
    found = []
    for node in ast.parse(block).body:
        call = getattr(node, "value", None)
        if (isinstance(node, ast.Expr) and isinstance(call, ast.Call)
                and getattr(call.func, "id", None) == "print"):
            line = lines[node.end_lineno - 1]
            if "#" in line[call.end_col_offset:]:
                comment = line[call.end_col_offset:].split("#", 1)[1]
                found.append((node.lineno, expected_text(comment)))
    return found


def run_block(block: str, namespace: dict) -> dict[int, str]:
    """Run the block statement by statement; the printed text of each statement by line."""
    printed = {}
    for node in ast.parse(block).body:
        code = compile(ast.Module(body=[node], type_ignores=[]), "README.md", "exec")
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(code, namespace)
        printed[node.lineno] = buffer.getvalue().strip()
    return printed


def test_every_fence_stands_alone():
    code_blocks(README.read_text(encoding="utf-8"), "python")


def test_the_convention_catches_a_wrong_number():
    assert same_output("[0.00498626 0.00099409] 119", "[0.0050 0.00099] 119")
    assert not same_output("0.007604", "0.0074")
    assert not same_output("optimal True", "'optimal' False")
    assert same_output("optimal True", "'optimal' True")
    assert expected_text(" 0.0076 (noise: 0.4 % of max|x|)") == "0.0076"


@pytest.mark.slow
def test_python_blocks_run_in_order_and_print_what_they_say(tmp_path, monkeypatch,
                                                             one_thread):
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    blocks = code_blocks(README.read_text(encoding="utf-8"), "python")
    assert len(blocks) >= 4
    namespace: dict = {"__name__": "__readme__"}
    checked = 0
    for index, block in enumerate(blocks):
        printed = run_block(block, namespace)
        for line, expected in stated_prints(block):
            assert same_output(printed[line], expected), (
                f"README python block {index + 1}, line {line}: prints {printed[line]!r}, "
                f"its comment says {expected!r}")
            checked += 1
    assert checked >= 4, "the README states fewer numbers than it used to: update this test"
