"""Large grids (issue 12): a clear error above `[study] max_points` runs unless allowed;
the runs are a lazy sequence, so planning and `study status` stream over the grid."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from study.cli import main as study_main
from study.spec import MAX_POINTS, Resources, StudyError, _canonical, _hash_id, load_study, parse_study
from tests.studyfiles import write_study

# 20 × 10 × 10 × 10 points × 10 seeds = 200,000 runs; × 5 more seeds: 1,000,000
AXES = ("lr = [" + ", ".join(f"0.{i + 1:02d}" for i in range(20)) + "]\n"
        "width = [" + ", ".join(str(8 + i) for i in range(10)) + "]\n"
        "batch_size = [" + ", ".join(str(16 + i) for i in range(10)) + "]\n"
        "weight_decay = [" + ", ".join(f"0.000{i}" for i in range(10)) + "]")
SEEDS_200K = "[" + ", ".join(map(str, range(10))) + "]"
SEEDS_1M = "[" + ", ".join(map(str, range(50))) + "]"


def test_a_million_point_grid_is_a_quick_clear_error_without_the_flag(tmp_path, capsys):
    path = write_study(tmp_path, grid=AXES, seeds=SEEDS_1M)
    t0 = time.perf_counter()
    with pytest.raises(StudyError, match=r"1,000,000 runs \(20 lr × 10 width × 10 batch_size × "
                                         r"10 weight_decay × 50 seeds\).*limit of 100,000.*"
                                         r"max_points.*--allow-large-grid"):
        load_study(path)
    assert study_main(["status", str(path)]) == 2
    assert "--allow-large-grid" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 10
    assert load_study(path, allow_large_grid=True).size == 1_000_000
    assert MAX_POINTS == 100_000


def test_max_points_in_the_file_raises_or_lowers_the_limit(tmp_path):
    doc = {"study": {"name": "s", "dataset": "digits", "model": "mlp", "seeds": [0, 1],
                     "max_points": 3},
           "train": {"target_loss": 0.05}, "grid": {"lr": [0.1, 0.01]}}
    with pytest.raises(StudyError, match=r"4 runs .* limit of 3 runs"):
        parse_study(doc)
    doc["study"]["max_points"] = 4
    assert len(parse_study(doc).runs()) == 4


def test_runs_are_a_lazy_sequence_with_the_ids_of_the_list(tmp_path):
    study = load_study(write_study(tmp_path, grid=AXES, seeds=SEEDS_200K), allow_large_grid=True)
    t0 = time.perf_counter()
    runs = study.runs()
    assert len(runs) == 200_000 and time.perf_counter() - t0 < 0.5
    # indexing decodes the point: the last axis varies fastest, then the seeds
    last = runs[-1]
    assert (last.hp["lr"], last.hp["weight_decay"], last.seed) == (0.2, 0.0009, 9)
    assert runs[11].hp["weight_decay"] == 0.0001 and runs[11].seed == 1
    # the ids a stream gives are those of the identity hashed afresh
    for i, spec in zip(range(25), runs):
        assert spec == runs[i] and spec.run_id == _hash_id(_canonical(runs[i].identity()))
    # iterating holds one spec at a time: memory does not grow with the grid
    tracemalloc.start()
    n = 0
    for spec in runs:
        spec.run_id
        n += 1
        if n == 20_000:
            break
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 20_000 and peak < 2_000_000, peak


def test_status_of_a_large_grid_streams_in_bounded_time(tmp_path, capsys):
    path = write_study(tmp_path, grid=AXES, seeds=SEEDS_200K)
    with pytest.raises(StudyError):
        load_study(path)
    t0 = time.perf_counter()
    assert study_main(["status", str(path), "--allow-large-grid"]) == 3  # incomplete
    took = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "200000 runs: 0 done, 0 failed, 0 diverged, 200000 left" in out
    assert "lr = 0.01" in out and " 10000\n" in out  # each lr value: 200,000 / 20 left
    assert took < 30, took  # 5 s here; the list-based status took 53 s


def test_fan_out_takes_a_generator_lazily_with_a_bounded_number_in_flight(monkeypatch):
    import sys
    import types

    from study import executor

    taken, in_flight = [], []

    class Ref:
        def __init__(self, v):
            self.v = v

    class Remote:
        def __init__(self, f):
            self.f = f

        def options(self, **_):
            return self

        def remote(self, *a):
            return Ref(self.f(*a))

    def wait(refs, num_returns, timeout):
        in_flight.append(len(refs))
        return refs[:1], refs[1:]

    ray = types.SimpleNamespace(is_initialized=lambda: True, remote=Remote, wait=wait,
                                get=lambda r: r.v, exceptions=types.SimpleNamespace(RayError=OSError),
                                nodes=lambda: [{"Alive": True, "Resources": {"CPU": 2}}])
    monkeypatch.setitem(sys.modules, "ray", ray)

    def items():
        for i in range(10):
            taken.append(i)
            yield i

    got = []
    executor.fan_out(items(), lambda i: 2 * i, lambda i: (i,),
                   Resources(max_in_flight=3), got.append)
    assert sorted(got) == [2 * i for i in range(10)] and taken == list(range(10))
    assert max(in_flight) == 3
