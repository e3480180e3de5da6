"""What each registered measure is, for readers of the report: family, definition, citation.

The registry (``study.measures.registry``) needs torch, which ``analysis`` does
not import; its words are kept in ``analysis/measure_info.json`` instead, a
committed copy that a test compares with the registry. After a change of the
registry, rewrite it with ``python -m analysis.measure_info`` (this command,
and only it, imports the registry).
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

PATH = Path(__file__).with_name("measure_info.json")


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


def main() -> None:
    """Rewrite ``analysis/measure_info.json`` from the registry."""
    PATH.write_text(dumps(from_registry()), encoding="utf-8")
    print(f"wrote {PATH} ({len(load.__wrapped__())} measures)")


if __name__ == "__main__":
    main()
