"""Command line: ``python -m study run|status|consolidate|migrate|measure STUDY.toml``.

Each command parses its flags, builds what the job needs (the `Study`, an `executor.Executor`
for those that fan out), calls the job (`study.jobs`) and prints its summary; errors of the
study file, the output or the cluster are one line ``error: …`` and exit status 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import MAX_POINTS
from .clikit import SuggestingParser, closed_pipe
from .storage import StorageError, Store
from .verbosity import LOG_FORMAT, log_level, verbosity_flags
from .version import version_line


def _verbosity(default=0) -> argparse.ArgumentParser:
    return verbosity_flags("less output: errors only, no progress bar, no Ray start-up line", default)


def at_least_one(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: give at least 1 (leave it out for automatic)")
    return n


def seconds(text: str) -> float:
    """An argparse type: a number of seconds ≥ 0."""
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not s >= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds ≥ 0")
    return s


def _executor_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `executor.Executor` (`_executor`), for each command that fans out."""
    p.add_argument("--address", help="Ray cluster address ('auto' on a cluster node); default: local Ray")
    p.add_argument("--serial", action="store_true", help="run in this process, one at a time (debugging)")
    p.add_argument("--max-in-flight", type=at_least_one, default=None,
                   help="Ray tasks in flight at once (≥ 1; default: automatic)")
    p.add_argument("--autoscaler", action="store_true", default=None,
                   help="the cluster grows: wait for a node that can hold a run (--node-wait) "
                        "instead of stopping at once (also STUDY_AUTOSCALER=1; assumed on a "
                        "`ray up` head)")
    p.add_argument("--node-wait", type=seconds, default=None,
                   help="with an autoscaler: seconds to wait for such a node (default 600: "
                        "executor.NODE_WAIT_S)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    p = SuggestingParser(prog="study", description="Train a grid of networks and measure them.",
                                parents=[_verbosity()])
    p.add_argument("--version", action="version", version=version_line("study"),
                   help="print the version and git commit, then exit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                           help="run, status, consolidate, migrate or measure")
    # on a subcommand, -q/-v add to those given before it (SUPPRESS: absent unless given)
    common = _verbosity(argparse.SUPPRESS)

    def command(name: str, what: str, fans_out: bool = False) -> argparse.ArgumentParser:
        c = sub.add_parser(name, parents=[common], help=what)
        c.add_argument("study", help="the study file (TOML)")
        c.add_argument("--out", help="output path or URI (overrides [study] out)")
        c.add_argument("--allow-large-grid", action="store_true",
                       help=f"allow a grid above [study] max_points runs (default {MAX_POINTS:,})")
        if fans_out:
            _executor_flags(c)
        return c
    command("run", "run every network of the study not yet stored", fans_out=True).add_argument(
        "--retry-failed", action="store_true", help="run failed and diverged runs again")
    command("status", "done / failed / left, per axis value; stale and missing measures; exit status 0 "
                      "complete, 3 incomplete, 4 with failed runs").add_argument(
        "--json", action="store_true", help="print one JSON object (counts, per-axis table, unreadable "
                                            "files, stale and missing measures) instead of the tables")
    command("consolidate", "merge the run files into <study>/runs.parquet").add_argument(
        "--skip-corrupt", action="store_true", help="leave unreadable run files out (listed) instead of failing")
    command("migrate", "rewrite rows of an older run-id schema under their new ids, and time columns "
                       "stored as text as timestamps")
    e = command("measure", "(re)compute measures of the stored networks from their checkpoints, without "
                           "training", fans_out=True)
    e.add_argument("--measures", help="comma-separated measure or family names ('all': every "
                                      "registered measure); default: the study file's selection")
    e.add_argument("--stale", action="store_true", help="the measures held under other settings")
    e.add_argument("--missing", action="store_true", help="the measures not computed")
    e.add_argument("--force", action="store_true", help="recompute even what is up to date")
    e.add_argument("--skip-corrupt", action="store_true",
                   help="leave unreadable run files out (not measured) instead of failing")
    return p


def _load(args):
    from .spec import load_study  # imports torch: after the first output line (main)
    study = load_study(args.study, allow_large_grid=args.allow_large_grid)
    study = study.with_out(args.out) if args.out else study
    args.where = study.out  # named if the output cannot be reached (main)
    return study


def _executor(args):
    """How the job fans out, from the command line's flags (`executor.Executor`)."""
    from .executor import Executor
    return Executor(address=args.address, serial=args.serial, max_in_flight=args.max_in_flight,
                    autoscaler=args.autoscaler, node_wait_s=args.node_wait,
                    progress=not (args.no_progress or args.quiet), announce=not args.quiet)


def cmd_run(args) -> int:
    """`study run`: train and measure every run not yet stored."""
    from .jobs.run import run_study
    from .spec import check_data_present
    study, executor = _load(args), _executor(args)
    if executor.local:
        check_data_present(study)
    s = run_study(study, executor, retry_failed=args.retry_failed)
    if s.ran == 0 and not s.interrupted and not s.stopped:
        print(f"{study.name}: all {s.total} runs already stored in {s.runs_dir}; nothing to do")
        print(next_command(study))
        return 0
    rate = s.ran / s.seconds * 60 if s.seconds else 0.0
    unconverged = f", {s.unconverged} not converged" if s.unconverged else ""
    print(f"{study.name}: ran {s.ran} ({s.ok} ok{unconverged}, {s.failed} failed, {s.diverged} diverged) "
          f"in {s.seconds:.0f} s ({rate:.1f} runs/min); {s.total - s.left}/{s.total} stored "
          f"in {s.runs_dir}")
    for f in s.failures[:10]:
        print(f"  failed {f}")
    if s.unconverged:
        print(f"  {s.unconverged} not converged: max_epochs ran out before target_loss. They are "
              "stored, but analysis leaves them out unless --include-unconverged; a larger "
              "max_epochs trains them again, under new run ids")
    if s.stopped:
        print(f"stopped: {s.stopped}. Submitted nothing more; the runs in flight were waited for "
              f"or cancelled; every stored row is whole. {s.left} runs left: fix the cause, then "
              "run the same command again to continue")
        return 3
    if s.interrupted:
        return _interrupted(s, f"{s.left} runs")
    print(next_command(study))
    return 1 if s.failed else 0


def _interrupted(ended, left: str) -> int:
    """Say how a job was interrupted and what is left; its exit status (130 Ctrl-C, 143 SIGTERM)."""
    print(f"{'stopped by SIGTERM' if ended.signal == 'SIGTERM' else 'interrupted'}: {left} left; run the "
          "same command again to continue")
    return 143 if ended.signal == "SIGTERM" else 130


def next_command(study) -> str:
    """The line `study run` ends with: the command that reports the study."""
    where = f"{study.out.rstrip('/')}/{study.name}"
    return f"next: analysis report {where} --out {where}/report.html"


def cmd_status(args) -> int:
    """`study status`: done (ok and converged) / not converged / failed / diverged / left, per
    axis value; then the stale and missing measures. ``--json``: the same as one JSON object.
    Exit status: `jobs.status.status_code`."""
    from .jobs.status import status
    study = _load(args)
    try:
        rep = status(study, args.study)
    except StorageError as e:  # with --json, a script reads stdout: the error as JSON there too
        if args.json:
            print(json.dumps({"study": study.name, "error": str(e), "exit_code": 2}, indent=1))
        raise
    if args.json:
        print(json.dumps(rep.as_json(), indent=1, default=str))
        return rep.exit_code
    count, unreadable = rep.counts, rep.unreadable
    unconverged = f", {count['unconverged']} not converged" if count["unconverged"] else ""
    print(f"{study.name} in {rep.runs_dir}: {rep.total} runs: {count['ok']} done"
          f"{unconverged}, {count['failed']} failed, {count['diverged']} diverged, {count['left']} left"
          + (f", {count['unreadable']} unreadable" if count["unreadable"] else ""))
    if unreadable:
        print(f"  {len(unreadable)} unreadable run file(s) (truncated or not Parquet; `study run` "
              "runs those networks again and replaces them):")
        for path in unreadable[:20]:
            print(f"    {path}")
        if len(unreadable) > 20:
            print(f"    … {len(unreadable) - 20} more")
    width = max((len(f"{a} = {v!r}") for a in study.grid for v in study.grid[a]), default=10)
    print(f"  {'axis value':<{width}}  {'done':>5} {'unconv':>6} {'failed':>6} {'diverged':>8} {'left':>5}")
    for axis, rows in rep.axes.items():
        for c in rows:
            label = f"{axis} = {c['value']!r}"
            print(f"  {label:<{width}}  {c['ok']:>5} {c['unconverged']:>6} "
                  f"{c['failed']:>6} {c['diverged']:>8} {c['left']:>5}")
    if count["unconverged"]:
        print("  (not converged: max_epochs ran out before target_loss; stored, but analysis "
              "leaves them out unless --include-unconverged)")
    if rep.not_in_grid:
        print(f"  ({rep.not_in_grid} stored runs are not in this study file's grid)")
    if rep.measures is not None:
        _print_stale(study, rep.measures)
    return rep.exit_code


def _print_stale(study, m: dict) -> None:
    names = m["outdated"]
    if not names:
        print(f"measures: all {m['expected']} up to date in the {m['ok_rows']} ok rows")
        return
    print(f"measures not up to date with this study file ({len(names)} of {m['expected']}, "
          f"over {m['ok_rows']} ok rows):")
    width = max(len(n) for n in names)
    print(f"  {'measure':<{width}}  {'stale':>5} {'missing':>7}")
    for n in names:
        print(f"  {n:<{width}}  {m['stale'].get(n, 0):>5} {m['missing'].get(n, 0):>7}")
    print(f"recompute them with `study measure {study.path or 'STUDY.toml'} --stale` (other settings) "
          "and `--missing` (not computed), without training")


def cmd_consolidate(args) -> int:
    """`study consolidate`: the runs in one Parquet file."""
    study = _load(args)
    store = Store(study.out, study.name)
    path, n = store.consolidate(skip_corrupt=args.skip_corrupt)
    print(f"{study.name}: {n} rows consolidated into {path}")
    for s in store.skipped:
        print(f"warning: skipped unreadable run file {s}", file=sys.stderr)
    return 0


def cmd_migrate(args) -> int:
    """`study migrate`: old-schema rows rewritten under their new ids (`jobs.migrate`)."""
    from . import SCHEMA_VERSION
    from .jobs.migrate import migrate_study
    study = _load(args)
    r = migrate_study(study)
    if r.retyped:
        print(f"{study.name}: {r.retyped} rows in {r.runs_dir} rewritten with their time columns "
              "(started_at, finished_at, remeasured_at) as timestamps")
    if not r.old_rows:
        print(f"{study.name}: no rows of an older run-id schema in {r.runs_dir}"
              + ("" if r.retyped else "; nothing to do"))
    else:
        print(f"{study.name}: {r.old_rows} old-schema rows in {r.runs_dir} migrated to schema {SCHEMA_VERSION}: "
              f"{r.written} rows written ({r.merged} merged from rows of the same network), "
              f"{r.deleted} old files deleted; {r.stored} of this study file's {study.size} runs are stored")
    for s in r.skipped:
        print(f"  not migrated: {s}")
    return 1 if r.skipped else 0


def cmd_measure(args) -> int:
    """`study measure`: measures of the stored networks computed from their checkpoints."""
    from .jobs.measure import Want, measure_study
    from .spec import StudyError, check_data_present
    study, executor = _load(args), _executor(args)
    if executor.local:
        check_data_present(study)
    names = tuple(n.strip() for n in args.measures.split(",") if n.strip()) if args.measures else None
    if args.measures is not None and not names:
        raise StudyError("--measures is empty: name measures or families, comma-separated")
    s = measure_study(study, Want(names, args.stale, args.missing, args.force), executor,
                      skip_corrupt=args.skip_corrupt)
    what = ("forced, " if args.force else "stale or missing " if args.stale == args.missing
            else "stale " if args.stale else "missing ") + ("of " + ",".join(names) if names
                                                             else "measures of the study file")
    print(f"{study.name}: {s.rows} stored ok networks in {s.runs_dir}: {s.todo} to measure "
          f"({s.pairs} values, {what}), {s.up_to_date} up to date")
    for f in s.skipped:
        print(f"warning: skipped unreadable run file {f}", file=sys.stderr)
    if s.no_checkpoint:
        print(f"  {len(s.no_checkpoint)} without a checkpoint (deleted, or stored with keep_networks = false "
              "or before checkpoints existed), "
              f"skipped: {', '.join(s.no_checkpoint[:5])}{' …' if len(s.no_checkpoint) > 5 else ''}")
    if not s.todo:
        print("nothing to compute")
        return 0
    print(f"measured {s.done - len(s.failures)} of {s.todo} networks ({s.computed} values) in "
          f"{s.seconds:.0f} s, no training; {len(s.failures)} failed")
    for f in s.failures[:10]:
        print(f"  failed {f}")
    if s.unverified:
        print(f"  {s.unverified} checkpoint{'s' if s.unverified > 1 else ''} written before checkpoints "
              "carried their run id and digest: checked by their config and weights only")
    if s.stopped:
        print(f"stopped: {s.stopped}. Submitted nothing more; the networks in flight were waited for "
              f"or cancelled; every stored row is whole. {s.todo - s.done} networks left: fix the "
              "cause, then run the same command again to continue")
        return 3
    if s.interrupted:
        return _interrupted(s, f"{s.todo - s.done} networks")
    return 1 if s.failures else 0


def main(argv=None) -> int:
    """The `study` command line; returns the exit status (141, silently, when the reader of standard
    output went away, as for a Unix tool in ``… | head``)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return closed_pipe()


def _main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=log_level(args.quiet, args.verbose), format=LOG_FORMAT)
    if args.cmd in ("run", "measure") and not (args.quiet or args.no_progress):  # before torch's import
        print(f"{args.study}: reading the study file …", file=sys.stderr, flush=True)
    from .spec import StudyError
    try:
        return {"run": cmd_run, "status": cmd_status, "consolidate": cmd_consolidate,
                "migrate": cmd_migrate, "measure": cmd_measure}[args.cmd](args)
    except (StudyError, StorageError) as e:  # executor.ClusterError is a StudyError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except OSError as e:  # an unreachable object store, an unreadable folder: one line, not a traceback
        line = (str(e).splitlines() or [type(e).__name__])[0]
        print(f"error: cannot reach the output {getattr(args, 'where', '')}: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
