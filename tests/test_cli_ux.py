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
