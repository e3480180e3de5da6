"""Regression pins, written once from the code before the restructuring (issue 8) and
compared ever since: the run id of every run of every study file in configs/, and the
ranking table of the `mini_runs` study. A deliberate change of either rewrites the
golden file in its own commit (`python tests/test_golden.py --write`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
REPO = GOLDEN.parent.parent


def config_run_ids() -> dict[str, list[str]]:
    from study.spec import load_study
    return {str(p.relative_to(REPO / "configs")): [r.run_id for r in load_study(p).runs()]
            for p in sorted((REPO / "configs").glob("**/*.toml"))}


def test_run_ids_of_every_config_unchanged():
    want = json.loads((GOLDEN / "run_ids.json").read_text())
    assert config_run_ids() == want


def ranking_rows(runs_dir: Path) -> list[dict]:
    from analysis.load import load_runs
    from analysis.table import rank_table
    return rank_table(load_runs(runs_dir)).to_dicts()


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def test_mini_ranking_unchanged(mini_runs):
    want = json.loads((GOLDEN / "minitest_ranking.json").read_text())
    got = json.loads(json.dumps(ranking_rows(mini_runs)))
    assert [r["measure"] for r in got] == [r["measure"] for r in want]
    for g, w in zip(got, want):
        assert set(g) == set(w), g["measure"]
        bad = {k: (g[k], w[k]) for k in w if not _same(g[k], w[k])}
        assert not bad, (g["measure"], bad)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    (GOLDEN / "run_ids.json").write_text(json.dumps(config_run_ids(), indent=1) + "\n")
elif __name__ == "__main__" and sys.argv[1:] == ["--write-ranking"]:
    import tempfile

    from study.executor import Executor
    from study.jobs.run import run_study
    from study.spec import load_study
    sys.path.insert(0, str(REPO))
    from tests.conftest import MINI_RUNS_STUDY
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "minitest.toml"
        p.write_text(MINI_RUNS_STUDY.format(out=Path(d) / "out"))
        run_study(load_study(p), Executor(serial=True, progress=False))
        rows = ranking_rows(Path(d) / "out" / "minitest")
    (GOLDEN / "minitest_ranking.json").write_text(json.dumps(rows, indent=0) + "\n")
