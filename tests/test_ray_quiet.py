"""A local Ray run says little, and says it early (issue 13 item 9): no token-authentication
warning, no ANSI escapes from Ray's log deduplication, "starting Ray …" before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from tests.studyfiles import write_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_LINE_S = 3  # process start to the first line: said before torch is imported (issue 13 item 9)
RAY_LINE_S = 20  # to "starting Ray": after torch, the study file and its networks are checked


def test_local_ray_run_is_quiet_and_speaks_first(tmp_path):
    p = write_study(tmp_path, include='["params"]', grid="width = [8]\nlr = [0.1, 0.2]\nbatch_size = [64]")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # a plain local run
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TERM", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "study", "run", str(p)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    lines: list[tuple[float, str, str]] = []

    def read(stream, name):
        for line in stream:
            lines.append((time.perf_counter() - t0, name, line))
    readers = [threading.Thread(target=read, args=(s, n)) for s, n in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for r in readers:
        r.start()
    proc.wait(timeout=300)
    for r in readers:
        r.join()
    text = "".join(line for _, _, line in lines)
    assert proc.returncode == 0, text[-3000:]
    assert "Token authentication" not in text and "RAY_AUTH_MODE" not in text, text
    assert "\x1b[" not in text, repr(text)
    lines.sort()
    said = [(t, part.strip()) for t, _, line in lines for part in line.split("\r") if part.strip()]
    assert said[0][0] < FIRST_LINE_S and said[0][1].endswith("reading the study file …"), said[:3]
    start = next(t for t, part in said if part.startswith("starting Ray … (local)"))
    assert start < RAY_LINE_S, said[:5]
    ran = next(t for t, part in said if "ran 2 (2 ok" in part)
    assert ran - start > 1.0, said  # said before Ray started, not after
    assert "in_flight=" in text and "s_per_net=" in text  # the bar's postfix
    assert text.rstrip().splitlines()[-1].startswith("next: analysis report ")
