"""The driver that ``ray submit`` runs on the head node of a Ray cluster.

    ray submit cluster/aws.yaml cluster/driver.py -- configs/mini.toml --out s3://BUCKET/studies

``ray submit`` copies this file to the head and runs it there with the
arguments after ``--``. It connects to the cluster (``--address auto``),
runs every network of the study that is not yet stored (`study.jobs.run`),
then prints the study's status, and with ``--consolidate`` writes
``OUT/<study>/runs.parquet`` once every run is stored.

A relative study path is looked up first in the working directory, then in
the checkout that the cluster file mounts and installs on every node
(``~/genmeasures``; the installed `study` package tells where it is).
Running the same command again resumes: stored runs are skipped, so a
driver that died (lost SSH session, preempted head, Ctrl-C) loses nothing.
Use ``ray submit --tmux …`` to keep the driver running after you disconnect.

Exit status: that of ``python -m study run`` (0: every run stored and none
failed; 1: some failed; 2: bad study file, output, [resources] no node can hold,
or a study another driver holds; 3: the output refused a write mid-study; 130:
interrupted; 143: SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def checkout_root() -> Path:
    """The folder that holds the installed `study` package (the mounted checkout)."""
    import study
    return Path(study.__file__).resolve().parent.parent


def resolve_study(path: str) -> Path:
    """The study file: as given if it exists, else relative to the checkout."""
    p = Path(path).expanduser()
    if p.is_file() or p.is_absolute():
        return p
    candidate = checkout_root() / p
    return candidate if candidate.is_file() else p


def at_least_one(text: str) -> int:
    from study.cli import at_least_one as check
    return check(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="driver.py", description="Run a study on the Ray cluster this runs on (ray submit).")
    p.add_argument("study", help="study file (TOML); relative paths also tried in the checkout")
    p.add_argument("--out", help="output path or URI (s3://…, gs://…); overrides [study] out")
    p.add_argument("--address", default="auto",
                   help="Ray cluster address (default: auto, the cluster of this node)")
    p.add_argument("--retry-failed", action="store_true", help="run failed and diverged runs again")
    p.add_argument("--max-in-flight", type=at_least_one, default=None,
                   help="Ray tasks in flight at once (≥ 1; default: automatic)")
    p.add_argument("--consolidate", action="store_true",
                   help="write OUT/<study>/runs.parquet when every run is stored and none failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from study.cli import main as study_main

    path = str(resolve_study(args.study))
    out = ["--out", args.out] if args.out else []
    run = ["run", path, "--address", args.address, *out]
    if args.retry_failed:
        run.append("--retry-failed")
    if args.max_in_flight is not None:
        run += ["--max-in-flight", str(args.max_in_flight)]
    if args.no_progress:
        run.append("--no-progress")
    rc = study_main(run)
    if rc == 2:  # bad study file or output: already explained, nothing to report
        return rc
    sys.stdout.flush()
    study_main(["status", path, *out])
    if args.consolidate and rc == 0:
        sys.stdout.flush()
        rc = study_main(["consolidate", path, *out])
    return rc


if __name__ == "__main__":
    sys.exit(main())
