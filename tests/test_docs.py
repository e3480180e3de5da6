"""The user docs (issue 22 item 6): README.md short, the reference pages in docs/, the measure catalogue
current, and no command, flag, file or link named in README.md, docs/*.md or results/claims/README.md
that does not exist (nor one pointing outside the repository)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from analysis import measure_info
from analysis.cli import _parser as analysis_parser
from study.cli import _parser as study_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "claims" / "README.md"]
PAGES = ("study-file", "measures", "statistics", "cluster", "extending", "guarantees", "commands", "report", "rows")
TOP = ("study", "analysis", "configs", "tests", "bench", "cluster", "docs", "results", ".ci")
# flags of other programs the docs show (ray, pip, make, chromium)
FOREIGN = {"--tmux", "--working-dir", "--generate", "--upgrade", "--headless", "--screenshot", "--window-size"}
PLACEHOLDER = re.compile(r"[<>*{}…]|\b[A-Z][A-Z_]{2,}\b|\bX\b")


def _flags_of(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Sub-command → its flags (with the top-level ones); '' → the top-level flags."""
    top = {s for a in parser._actions for s in a.option_strings}
    out = {"": top}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                out[name] = top | {s for b in sub._actions for s in b.option_strings}
    return out


CLIS = {"study": _flags_of(study_parser()), "analysis": _flags_of(analysis_parser())}
SCRIPT_FLAGS = {f for d in ("study", "analysis", "cluster", "bench")
                for p in (ROOT / d).rglob("*.py") for f in re.findall(r"""["'](--[a-z][a-z0-9-]*)["']""", p.read_text())}
ALL_FLAGS = SCRIPT_FLAGS | FOREIGN | {f for c in CLIS.values() for fs in c.values() for f in fs}
MAKE_TARGETS = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def _code(text: str) -> tuple[list[str], list[str]]:
    """(the lines of shell code blocks, the inline code spans) of a Markdown text."""
    lines, spans = [], []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if lang in ("", "sh", "bash", "console"):
            lines += [ln.split(" #", 1)[0].strip() for ln in body.splitlines()]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    spans = re.findall(r"`([^`\n]+)`", prose)
    return lines, spans


def command_problems(words: list[str]) -> list[str]:
    """What does not exist in one command line: its sub-command or flags (study, analysis, make, python)."""
    while words and (words[0].startswith(".venv/bin/") or words[0] in ("python", "python3", "-m")
                     or re.fullmatch(r"\w+=\S*", words[0])):
        words = [words[0].removeprefix(".venv/bin/")] + words[1:] if words[0].startswith(".venv/bin/") \
            and words[0] != ".venv/bin/" else words[1:]
        if words and words[0] in CLIS:
            break
    if not words:
        return []
    prog, rest = words[0], words[1:]
    if prog == "make":
        return [f"make {t}" for t in rest if not t.startswith("-") and "=" not in t and t not in MAKE_TARGETS]
    if prog.endswith(".py") and "/" in prog:
        return [] if (ROOT / prog).exists() else [prog]
    if prog not in CLIS:
        return []
    flags = CLIS[prog]
    sub = next((w for w in rest if not w.startswith("-")), None)
    bad = []
    if sub is not None and sub not in flags and not PLACEHOLDER.search(sub):
        if re.fullmatch(r"[a-z]+", sub):
            bad.append(f"{prog} {sub}")
        sub = None
    known = flags.get(sub or "", flags[""])
    for w in rest:
        f = w.strip("[]").split("=", 1)[0]
        if f.startswith("--") and f not in known:
            bad.append(f"{prog} {sub or ''} {f}")
    return bad


def _paths(span: str) -> list[str]:
    """Repository paths named in an inline code span (no placeholders)."""
    out = []
    for tok in re.split(r"[\s,()]+", span):
        tok = tok.rstrip(".:;")
        if "/" in tok and tok.split("/", 1)[0] in TOP and not PLACEHOLDER.search(tok) and "://" not in tok:
            out.append(tok)
    return out


def problems(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"(https?|mailto):|#", target):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or ROOT not in path.parents and path != ROOT:
            bad.append(f"link {target}")
    if re.search(r"\.\./shared|shared/[A-Z]+\.md", text):
        bad.append("points to ../shared")
    lines, spans = _code(text)
    for line in lines + spans:
        bad += command_problems(line.split())
    for span in spans:
        for tok in _paths(span):
            file, _, test = tok.partition("::")
            if not (ROOT / file).exists():
                bad.append(f"file {file}")
            elif test and not re.search(rf"^(async )?def {re.escape(test)}\(", (ROOT / file).read_text(), re.M):
                bad.append(f"test {tok}")
        for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", span):
            if f not in ALL_FLAGS:
                bad.append(f"flag {f}")
    return bad


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_what_exists(doc):
    assert problems(doc) == []


def test_the_checker_sees_what_does_not_exist(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("see [a](nowhere.md), `../shared/DESIGN.md`, `study/nothing.py`, "
                   "`tests/test_docs.py::test_none`, `study statuss STUDY.toml`, `--jsn`\n"
                   "```sh\nanalysis report RUNS --outt r.html\nmake nothing\n```\n")
    found = problems(doc)
    for want in ("link nowhere.md", "points to ../shared", "file study/nothing.py",
                 "test tests/test_docs.py::test_none", "study statuss", "flag --jsn", "--outt", "make nothing"):
        assert any(want in p for p in found), (want, found)


def test_readme_is_short_and_the_pages_are_there():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
    assert all((ROOT / "docs" / f"{p}.md").exists() for p in PAGES)


def test_the_measure_catalogue_is_current():
    assert (ROOT / "docs" / "measures.md").read_text(encoding="utf-8") == measure_info.markdown(measure_info.load())
