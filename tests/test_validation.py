"""Study files that used to pass validation and fail at run time: `study run` refuses them
(exit 2, one message, no row written) before any work (issue 12)."""

from __future__ import annotations

import pytest

from study import models
from study.cli import main
from study.spec import StudyError, parse_study
from tests.studyfiles import write_study


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


CASES = {
    "nin_on_xor": (lambda p: (_edit(p, 'dataset = "digits"', 'dataset = "xor"'),
                              _edit(p, 'model = "mlp"', 'model = "nin"'),
                              _edit(p, "train_size = 300", "train_size = 100")),
                   "width = 16 cannot be built for dataset 'xor' (inputs of shape (2,)): nin needs image input"),
    "eval_batch_0": (lambda p: _edit(p, "[measures]", "[measures.knobs]\neval_batch = 0\n[measures]"),
                     "measure knob 'eval_batch' must be an integer ≥ 1"),
    "eval_batch_float": (lambda p: _edit(p, "[measures]", "[measures.knobs]\neval_batch = 2.5\n[measures]"),
                         "measure knob 'eval_batch' must be an integer ≥ 1"),
    "negative_knob": (lambda p: _edit(p, "[measures]", "[measures.knobs]\nflat_samples = -3\n[measures]"),
                      "measure knob 'flat_samples' must be an integer ≥ 1"),
    "nan_knob": (lambda p: _edit(p, "[measures]", "[measures.knobs]\nmemory_mb = nan\n[measures]"),
                 "measure knob 'memory_mb' must be a number (finite) > 0.0"),
    "knobs_not_a_table": (lambda p: p.write_text(p.read_text() + "knobs = 3\n"),
                          "knobs = 3 must be a table of knob = value"),
    "width_1e9": (lambda p: _edit(p, "width = [16, 32]", "width = [16, 1000000000]"),
                  "width = 1000000000 must be an integer in [1, 65536]"),
    "width_float": (lambda p: _edit(p, "width = [16, 32]", "width = [16, 1e9]"),
                    "width = 1000000000.0 must be an integer in [1, 65536]"),
    "too_many_parameters": (lambda p: (_edit(p, "width = [16, 32]", "width = [16, 20000]"),
                                       _edit(p, "[data]", "[model]\ndepth = 2\n[data]")),
                            "has 401,520,010 parameters on digits, above the limit"),
    "batchnorm_batch_of_one": (lambda p: (_edit(p, "train_size = 300", "train_size = 257"),
                                          _edit(p, "[data]", "[model]\nbatchnorm = true\n[data]")),
                               "fails on a training batch of one example (257 training examples, "
                               "batch_size = 64)"),
    "absent_data": (lambda p: (_edit(p, 'dataset = "digits"', 'dataset = "cifar10"'),
                               _edit(p, "train_size = 300", f"train_size = 300\nroot = {str(p.parent / 'nodata')!r}\n"
                                                            "download = false")),
                    "dataset cifar10 is not available (download = false)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_refuses_before_any_row(tmp_path, capsys, case):
    edit, message = CASES[case]
    p = write_study(tmp_path)
    edit(p)
    assert main(["run", str(p), "--serial", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing started, no row written


def test_parameter_limit_is_the_documented_one():
    assert models.MAX_PARAMETERS == 10**8 and (models.MAX_WIDTH, models.MAX_DEPTH) == (2**16, 1000)
    doc = {"study": {"name": "s", "dataset": "digits", "model": "mlp"}, "grid": {"lr": [0.1]}}
    parse_study({**doc, "model": {"width": 7000, "depth": 2}})  # 4.9·10⁷ parameters: fine
    with pytest.raises(StudyError, match=r"\[model\]: model 'mlp' with depth = 3, width = 7500 has "
                                         r"113,077,510 parameters on digits, above the limit of "
                                         r"100,000,000 \(study.models.MAX_PARAMETERS\)"):
        parse_study({**doc, "model": {"width": 7500, "depth": 3}})


def test_present_data_with_download_false_runs_the_check_only_locally(tmp_path, monkeypatch):
    """The files are looked for on this machine: with a cluster address the check is left to the
    runs (a cluster's nodes hold their own data folders)."""
    from study import cli
    p = write_study(tmp_path)
    _edit(p, "train_size = 300", f"train_size = 300\nroot = {str(tmp_path / 'nodata')!r}\ndownload = false")
    _edit(p, 'dataset = "digits"', 'dataset = "mnist"')
    seen = []
    monkeypatch.setattr("study.jobs.run.run_study", lambda study, *a, **kw: seen.append(study) or _Done())
    assert cli.main(["run", str(p), "--address", "ray://head:10001", "--no-progress"]) == 0
    assert seen
    assert cli.main(["run", str(p), "--no-progress"]) == 2


class _Done:
    ran = total = left = 0
    interrupted = False
    stopped = ""
    runs_dir = "x"
