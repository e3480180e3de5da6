"""One output layer in `analysis` (issue 21): one number-and-interval formatter with one missing
mark, one page shell and one stylesheet, all in `analysis.output`; a second one anywhere else
fails here."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

from analysis.output import MISSING, interval, num, page

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"
#: The names the six formatters this layer replaced had (cli._fmt, report._num, interactive._fmt,
#: network_view._fmt, claims' fmt, figures._fmt), and the like.
FORMATTER_NAME = re.compile(r"^_*(fmt|num|number|fmt_\w+|\w+_fmt|format_(num|number|value|float))$")
MARKS = {MISSING, "—", "n/a", "NA"}  # how a missing value could be written
SHELL = ("<!doctype", "<html", "<style", "<head")


def others():
    for path in sorted(ANALYSIS.rglob("*.py")):
        if path.name != "output.py":
            yield path.relative_to(ANALYSIS).as_posix(), ast.parse(path.read_text())


def formatters(name: str, tree: ast.AST) -> list[str]:
    """Each function named like a number formatter and each literal missing mark in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and FORMATTER_NAME.match(node.name):
            found.append(f"analysis/{name}:{node.lineno}: a formatter {node.name}()")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MARKS:
            found.append(f"analysis/{name}:{node.lineno}: a missing mark {node.value!r} (use output.MISSING)")
    return found


def test_one_formatter_and_one_missing_mark():
    found = [f for name, tree in others() for f in formatters(name, tree)]
    assert not found, "numbers are formatted by analysis.output.num / interval only:\n" + "\n".join(found)
    snippet = 'def _fmt(v):\n    return "—" if v is None else f"{v:+.3f}"\n'
    assert len(formatters("x.py", ast.parse(snippet))) == 2  # the scan sees the kind it replaced


def test_one_page_shell_and_stylesheet():
    found = [f"analysis/{name}:{node.lineno}" for name, tree in others() for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and any(tag in node.value.lower() for tag in SHELL)]
    assert not found, "HTML pages come from analysis.output.page (its STYLE) only:\n" + "\n".join(found)


def test_the_formatter():
    assert [num(None), num(math.nan), num(-math.inf), num(3), num(True), num("sgd")] == [MISSING, MISSING, MISSING,
                                                                                        "3", "True", "sgd"]
    assert num(0.12345) == "0.123" and num(0.5, "+.2f") == "+0.50" and num(-1e-17, "+.3g", tiny=1e-12) == "+0"
    assert num(12.34, ".1f", unit=" %") == "12.3 %" and num(None, unit=" %") == MISSING
    assert interval(0.1, 0.25, "+.2f") == "[+0.10, +0.25]" and interval(None, 1.0) == MISSING
    assert interval(math.nan, 1.0) == f"[{MISSING}, 1.000]"
    html = page("a <b>", ["<p>x</p>", ""], "<script>1</script>")
    assert html.count("<style>") == 1 and "<title>a &lt;b&gt;</title>" in html and "<p>x</p>\n<script>" in html
