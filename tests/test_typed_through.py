"""Settings stay typed from the parsed study file to the runner (issue 21): the options objects
travel, nothing downstream turns them back into dicts or reads a setting by its name as a string."""

from __future__ import annotations

import ast
from pathlib import Path

from study.data import DataOptions, DataSource
from study.models import MODELS
from study.spec import MeasureSettings, Resources, StudyHead
from study.train import TrainOptions

STUDY = Path(__file__).resolve().parent.parent / "study"
#: Where an options object becomes a dict, and why: `Options.as_dict`, the one serialisation (a
#: run's id and its row's config), and the measure knobs resolved against their defaults (the
#: knobs are a table of the study file, name → value, by design).
DUMPS = {("options.py", "as_dict"), ("measures/registry.py", "check_knobs")}
#: Who calls `Options.as_dict`: the run's identity and config, and `Options.id_part`.
AS_DICT = {("spec.py", "identity"), ("spec.py", "to_json"), ("options.py", "id_part")}
#: Where a document is read by its keys: the study file's tables and a row's config JSON.
PARSERS = {("spec.py", "parse_study"), ("spec.py", "from_json")}
SECTIONS = {"train", "measures", "resources", "model_options", "data_source", "source"}


def setting_names() -> set[str]:
    kinds = [DataOptions, DataSource, TrainOptions, MeasureSettings, Resources,
             *(f.options for f in MODELS.values())]
    return {k for t in kinds for k in t.model_fields} | SECTIONS | (set(StudyHead.model_fields) - {
        "dataset", "model", "name"})  # a row's columns too, and any named thing's name


def functions(tree: ast.AST):
    """(node, name of the function around it) for every node of ``tree``."""
    def walk(node, where):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            yield child, inner
            yield from walk(child, inner)
    yield from walk(tree, "")


def sources():
    for path in sorted(STUDY.rglob("*.py")):
        yield path.relative_to(STUDY).as_posix(), ast.parse(path.read_text())


def test_options_become_dicts_only_where_a_run_is_serialised():
    found = {(name, where) for name, tree in sources() for node, where in functions(tree)
             if isinstance(node, ast.Attribute) and node.attr in ("model_dump", "dict", "model_dump_json")}
    assert found == DUMPS, f"an options object turned into a dict outside {sorted(DUMPS)}: {sorted(found - DUMPS)}"
    calls = {(name, where) for name, tree in sources() for node, where in functions(tree)
             if isinstance(node, ast.Attribute) and node.attr == "as_dict"} - {("options.py", "as_dict")}
    assert calls == AS_DICT, f"Options.as_dict called outside {sorted(AS_DICT)}: {sorted(calls - AS_DICT)}"


def string_key_reads(name: str, tree: ast.AST) -> list[str]:
    """Each subscript or ``.get`` / ``.pop`` / ``.setdefault`` with a string naming a setting,
    outside the parsers."""
    names, found = setting_names(), []
    for node, where in functions(tree):
        key = None
        if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
                and isinstance(node.slice, ast.Constant)):
            key = node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("get", "pop", "setdefault") and node.args
              and isinstance(node.args[0], ast.Constant)):
            key = node.args[0].value
        if isinstance(key, str) and key in names and (name, where) not in PARSERS:
            found.append(f"study/{name}:{node.lineno} ({where or 'module'}): {key!r}")
    return found


def test_no_setting_is_read_by_a_string_key():
    found = [f for name, tree in sources() for f in string_key_reads(name, tree)]
    assert not found, "settings read by string key (use the typed options):\n" + "\n".join(found)


def test_the_scan_sees_string_key_reads():
    tree = ast.parse('def f(spec, study):\n    return spec.measures["include"], study.resources.get("num_gpus")\n')
    assert len(string_key_reads("x.py", tree)) == 2
    assert string_key_reads("spec.py", ast.parse('def from_json(d):\n    return d["measures"]\n')) == []
