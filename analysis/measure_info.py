"""What each registered measure is, for readers of the report: family, definition, citation.

The registry (``study.measures.registry``) needs torch, which ``analysis`` does
not import; its words are kept in ``analysis/measure_info.json`` instead, a
committed copy that a test compares with the registry. After a change of the
registry, rewrite it with ``python -m analysis.measure_info`` (this command,
and only it, imports the registry); it also rewrites the catalogue page ``docs/measures.md``
(`markdown`), which a test compares with the JSON.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

PATH = Path(__file__).with_name("measure_info.json")
DOCS = PATH.parents[1] / "docs" / "measures.md"


def definition(doc: str) -> str:
    """The first paragraph of a measure's docstring on one line (whitespace collapsed)."""
    first = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    return " ".join(first.split())


def from_registry() -> dict[str, dict]:
    """Name → {family, definition, cite, stochastic} of every registered measure (imports torch)."""
    from study.measures.registry import REGISTRY  # the package import fills the registry
    return {m.name: {"family": m.family, "definition": definition(m.doc), "cite": m.cite,
                     "stochastic": m.stochastic} for m in sorted(REGISTRY.values(), key=lambda m: m.name)}


def dumps(info: dict[str, dict]) -> str:
    """The file's text for ``info``: sorted keys, one measure a line, UTF-8 as written."""
    lines = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False, sort_keys=True)}" for k, v in sorted(info.items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"


@functools.cache
def load() -> dict[str, dict]:
    """The committed copy: name → {family, definition, cite, stochastic}."""
    return json.loads(PATH.read_text(encoding="utf-8"))


def markdown(info: dict[str, dict]) -> str:
    """The measure catalogue page: one table per family (families and measures by name)."""
    cell = lambda t: str(t).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    out = ["# The measures", "",
           "Generated from the registry (`analysis/measure_info.json`) by `python -m analysis.measure_info`; "
           "do not edit by hand. Each measure is a column `measure.<name>` of the rows; a stochastic one is "
           "redrawn by `[measures] repeats` (reliability in [statistics](statistics.md)). Select them in a "
           "study file by name or family (`[measures] include`, [the study file](study-file.md)).", ""]
    families: dict[str, list[str]] = {}
    for name, v in sorted(info.items()):
        families.setdefault(v["family"], []).append(name)
    out.append(f"{len(info)} measures in {len(families)} families: "
               + ", ".join(f"{f} ({len(ms)})" for f, ms in sorted(families.items())) + ".")
    for fam, names in sorted(families.items()):
        out += ["", f"## {fam}", "", "| measure | definition | citation | stochastic |", "|---|---|---|---|"]
        out += [f"| `{n}` | {cell(info[n]['definition'])} | {cell(info[n]['cite'])} | "
                f"{'yes' if info[n]['stochastic'] else 'no'} |" for n in names]
    return "\n".join(out) + "\n"


def main() -> None:
    """Rewrite ``analysis/measure_info.json`` from the registry, and ``docs/measures.md`` from it."""
    PATH.write_text(dumps(from_registry()), encoding="utf-8")
    print(f"wrote {PATH} ({len(load.__wrapped__())} measures)")
    DOCS.write_text(markdown(load.__wrapped__()), encoding="utf-8")
    print(f"wrote {DOCS}")


if __name__ == "__main__":
    main()
