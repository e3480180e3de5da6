"""The command lines as a user meets them (issue 13 item 8): "did you mean" for misspelt names,
--version, -q / -v, help on every argument, `study status --json` and its exit codes."""

from __future__ import annotations

import pytest

from study.spec import StudyError, parse_study


def base(**over):
    doc = {"study": {"name": "s", "dataset": "digits", "model": "mlp", "seeds": [0]},
           "train": {"target_loss": 0.05},
           "grid": {"lr": [0.1], "width": [8]}}
    doc.update(over)
    return doc


@pytest.mark.parametrize("doc, hint", [
    (base(measures={"include": ["path_nrom"]}), "(did you mean 'path_norm'?)"),
    (base(measures={"include": ["curvatrue"]}), "(did you mean 'curvature'?)"),
    (base(measures={"exclude": ["sise"]}), "did you mean 'size'"),
    (base(study={"name": "s", "dataset": "mnsit", "model": "mlp"}), "(did you mean 'mnist'"),
    (base(study={"name": "s", "dataset": "digits", "model": "mpl"}), "(did you mean 'mlp'?)"),
    (base(grid={"lr": [0.1], "widht": [8]}), "unknown key(s) widht (did you mean 'width'?)"),
    (base(train={"target_loss": 0.05, "max_epoch": 3}), "(did you mean 'max_epochs'?)"),
    (base(model={"dept": 2}), "did you mean 'depth'"),
    (base(measures={"knobs": {"spec_op_rtl": 1e-3}}), "(did you mean 'spec_op_rtol'?)"),
])
def test_misspelt_names_get_a_suggestion(doc, hint):
    with pytest.raises(StudyError) as e:
        parse_study(doc)
    assert hint in str(e.value) and "\n" not in str(e.value)


def test_far_names_get_none():
    with pytest.raises(StudyError) as e:
        parse_study(base(measures={"include": ["sharpness_of_vibes_and_more"]}))
    assert "did you mean" not in str(e.value)


def all_arguments(parser, name):
    import argparse
    for act in parser._actions:
        if isinstance(act, argparse._SubParsersAction):
            for sub, p in act.choices.items():
                yield from all_arguments(p, f"{name} {sub}")
        elif not isinstance(act, argparse._HelpAction):
            yield name, act


def test_every_argument_has_help():
    from analysis.cli import _parser as analysis_parser
    from study.cli import _parser as study_parser
    missing = [(cmd, act.option_strings or act.dest) for parser, prog in ((study_parser(), "study"),
                                                                         (analysis_parser(), "analysis"))
               for cmd, act in all_arguments(parser, prog) if not (act.help or "").strip()]
    assert missing == []


def test_version_names_the_package_and_commit(capsys):
    from analysis.cli import main as analysis_main
    from study import __version__
    from study.cli import main as study_main
    from study.version import git_commit
    for main, prog in ((study_main, "study"), (analysis_main, "analysis")):
        with pytest.raises(SystemExit) as e:
            main(["--version"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{prog} {__version__} (") and git_commit()[:12] in out


def test_quiet_and_verbose_set_the_log_level():
    import logging

    from study.cli import _parser, log_level
    for argv, level in ((["status", "x.toml"], logging.WARNING), (["-q", "status", "x.toml"], logging.ERROR),
                        (["status", "x.toml", "-v"], logging.INFO), (["-v", "status", "x.toml", "-vv"], logging.DEBUG)):
        a = _parser().parse_args(argv)
        assert log_level(a.quiet, a.verbose) == level, argv


def write_rows(study, outcomes: dict[int, str]) -> None:
    """Rows for some runs of ``study`` (by index), without training: 'ok', 'unconverged', 'failed'."""
    from study.storage import Store
    store = Store(study.out, study.name)
    for i, outcome in outcomes.items():
        spec = study.runs()[i]
        store.write_row({"run_id": spec.run_id, "study": study.name, "status": "failed" if outcome == "failed" else "ok",
                         "converged": outcome == "ok", "error": "", "config": spec.to_json(),
                         "measure.params": 1.0})


def test_status_json_and_exit_codes(tmp_path, capsys):
    import json

    from study.cli import main
    from study.spec import load_study
    from tests.studyfiles import write_study
    p = write_study(tmp_path, include='["params"]')  # 4 runs: width 16, 32 × lr 0.1, 0.2
    study = load_study(p)

    def status():
        code = main(["status", str(p), "--json"])
        return code, json.loads(capsys.readouterr().out)

    code, rep = status()
    assert code == 3 and rep["counts"]["left"] == 4 and rep["measures"] is None and not rep["complete"]
    write_rows(study, {0: "ok", 1: "ok", 2: "unconverged"})
    code, rep = status()
    assert code == 3 and rep["counts"] == {"ok": 2, "unconverged": 1, "failed": 0, "diverged": 0, "left": 1,
                                           "unreadable": 0}
    assert sum(c["left"] for c in rep["axes"]["width"]) == 1
    assert {c["value"] for c in rep["axes"]["lr"]} == {0.1, 0.2}
    assert rep["measures"]["ok_rows"] == 3 and rep["measures"]["stale"] == {"params": 3}  # no settings hash
    write_rows(study, {3: "ok"})
    code, rep = status()
    assert code == 0 and rep["complete"] and rep["exit_code"] == 0
    assert main(["status", str(p)]) == 0 and "4 runs: 3 done, 1 not converged" in capsys.readouterr().out
    write_rows(study, {3: "failed"})
    assert status()[0] == 4 and main(["status", str(p)]) == 4 and "1 failed" in capsys.readouterr().out
    (tmp_path / "out" / "tiny" / "runs" / f"{study.runs()[3].run_id}.parquet").write_bytes(b"not parquet")
    code, rep = status()
    assert code == 3 and rep["counts"]["unreadable"] == 1 and len(rep["unreadable"]) == 1


def test_run_ends_with_the_next_command(tmp_path, capsys):
    from study.cli import main
    from tests.studyfiles import write_study
    p = write_study(tmp_path, include='["params"]', grid="width = [8]\nlr = [0.1]\nbatch_size = [64]")
    assert main(["run", str(p), "--serial", "-q"]) == 0
    out, err = capsys.readouterr()
    where = f"{tmp_path / 'out'}/tiny"
    assert out.splitlines()[-1] == f"next: analysis report {where} --out {where}/report.html"
    assert err == ""  # -q: no progress bar


def test_report_takes_top(monkeypatch, tmp_path):
    import analysis.report
    from analysis.cli import main
    seen = {}
    monkeypatch.setattr(analysis.report, "write_report", lambda src, out, **kw: seen.update(kw))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html"), "--top", "3"]) == 0
    assert seen["top"] == 3
    seen.clear()
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 0 and "top" not in seen
