"""The registry holds exactly the measures of ../shared/MEASURES.md, each documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from study.measures import FAMILIES, KNOBS, select

MEASURES_MD = Path(__file__).resolve().parents[2] / "shared" / "MEASURES.md"


def catalogue_names() -> set[str]:
    names = set()
    for line in MEASURES_MD.read_text().splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names |= set(re.findall(r"`([^`]+)`", first))
    return names


@pytest.mark.skipif(not MEASURES_MD.exists(), reason="../shared/MEASURES.md is not beside the checkout")
def test_registry_is_the_catalogue():
    assert {m.name for m in select(["all"])} == catalogue_names()


def test_every_measure_documented_with_citation_and_declared_knobs():
    ms = select(["all"])
    assert len(ms) >= 56
    for m in ms:
        assert m.family in FAMILIES and m.cite and m.doc, m.name
        assert all(k in KNOBS for k in m.knobs), m.name
    assert {m.family for m in ms} == set(FAMILIES)
