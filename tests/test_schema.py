"""The row schema module: column names, Arrow types, the ranking order, the atomic write."""

from __future__ import annotations

import math
import os

import polars as pl
import pyarrow as pa
import pytest

from analysis.load import sort_ranking
from study import schema


def test_column_names_and_types():
    assert schema.measure_col("sharpness") == "measure.sharpness" and schema.hp_col("lr") == "hp.lr"
    assert [schema.name_of(c) for c in ("measure.a", "hp.b", "seconds.c", "artifact.d", "gap")] == list("abcd") + ["gap"]
    assert schema.is_measure("measure.a") and not schema.is_measure("measure_seconds")
    assert schema.MEASURE == "measure." and schema.HP.col("lr") == "hp.lr" and schema.is_hp("hp.lr")
    assert schema.arrow_type("measure.a", 3) == pa.float64() == schema.arrow_type("seconds.a", 1)
    assert schema.arrow_type("artifact.a", [1.0]) == pa.list_(pa.float64())
    assert [schema.arrow_type("hp.x", v) for v in (True, 3, 0.5, "sgd")] == [pa.bool_(), pa.int64(), pa.float64(),
                                                                            pa.string()]
    for a in schema.ARTIFACTS.values():
        assert a.x is None or schema.ARTIFACTS[a.x].kind == "x"


def test_ranking_order():
    nan = math.nan
    t = pl.DataFrame({"dataset": ["b", "a", "a", "a", "a"], "measure": ["e", "d", "c", "b", "a"],
                      "cmi": [0.9, nan, 0.1, 0.1, 0.1], "tau": [0.1, 0.9, -0.5, 0.5, 0.2]})
    assert sort_ranking(t, per_dataset=True)["measure"].to_list() == ["b", "c", "a", "d", "e"]
    assert sort_ranking(t)["measure"].to_list() == ["e", "b", "c", "a", "d"]
    assert sort_ranking(t, "tau")["measure"].to_list() == ["d", "c", "b", "a", "e"]  # ties keep their order


def test_atomic_write_replaces_whole_files(tmp_path):
    p = str(tmp_path / "sub" / "f.bin")
    assert schema.write_atomic(p, b"one") == p
    schema.write_atomic(p, b"two")
    assert open(p, "rb").read() == b"two" and os.listdir(tmp_path / "sub") == ["f.bin"]
    with pytest.raises(TypeError):
        schema.write_atomic(p, "not bytes")
    assert open(p, "rb").read() == b"two" and os.listdir(tmp_path / "sub") == ["f.bin"]
