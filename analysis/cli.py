"""Command line of the analysis.

    python -m analysis rank RUNS --out TABLE.csv      (or TABLE.parquet)
    python -m analysis report RUNS [--out report.html]   (default <study>/report.html)
    python -m analysis score PATH.py:FUNCTION RUNS [--out TABLE.csv] [--report report.html]
    python -m analysis claims RUNS [RUNS …] [--out claims.csv --out claims.md --out claims.html]
    python -m analysis notebooks RUNS                  (Jupyter on analysis/notebooks, RUNS set)

RUNS is a runs folder, a study folder, a consolidated Parquet file or a URI
(:mod:`analysis.load`). ``rank`` writes the ranking table
(:mod:`analysis.table`) as CSV or Parquet, chosen by the extension, and
prints its head (columns empty for every measure left out of the print, not of the file),
after the report's warnings for a study too small or too noisy to rank with confidence
(:mod:`analysis.floor`; on stderr, silenced by ``-q``). ``report`` hands over to ``analysis.report.write_report``.
``score`` computes a user's measure on every stored network (:mod:`analysis.score`, the
one command that imports torch, inside it) and ranks it with the rest, as ``rank`` does
(``--report``: the report too).
``claims`` tests the seed's claims (CLAIMS.md; :mod:`analysis.claims`) on each study given,
one row per (claim, study, statistic) with a verdict, prints the table's head and writes it
once per ``--out`` (repeatable; .csv, .parquet, .md or .html by the extension);
``--claims id1,id2`` picks claims, ``--boots`` (default 10000) and ``--boot-seed`` the
bootstrap, ``--min-ess`` the robust sign-error's environments; it prints each study's noise floor
first.
All of them refuse a measure column whose rows mix settings hashes
(``measure_cfg.<name>``; :func:`analysis.load.check_settings`) unless
``--allow-mixed``. Bad input ends with one line ``error: …`` on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

import polars as pl

from study.clikit import SuggestingParser, closed_pipe
from study.schema import RowsError, name_of, unique_runs
from study.verbosity import LOG_FORMAT, log_level, verbosity_flags
from study.version import version_line

from .load import RunsError, decode, load_runs
from .output import MISSING, TABLE_FORMATS, num, write, write_table


def _parser() -> argparse.ArgumentParser:
    ap = SuggestingParser(prog="analysis", description="Rank generalization measures from a study's runs.",
                                 parents=[_verbosity()])
    ap.add_argument("--version", action="version", version=version_line("analysis"),
                    help="print the version and git commit, then exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            help="rank, report, score, claims or notebooks")
    common = _verbosity(argparse.SUPPRESS)  # after the subcommand too; absent unless given
    _claims_parser(sub, common)
    nb = sub.add_parser("notebooks", parents=[common],
                        help="open the notebooks (analysis/notebooks) in Jupyter on a study's runs")
    nb.add_argument("runs", help="runs folder, study folder, consolidated runs.parquet, or a URI")
    nb.add_argument("--classic", action="store_true", help="the classic notebook interface instead of JupyterLab")
    for name, helptext in (("rank", "write the ranking table (CSV or Parquet)"),
                           ("report", "write the HTML report"),
                           ("score", "a measure of your own (PATH.py:FUNCTION) on every stored "
                                     "network, ranked with the study's")):
        p = sub.add_parser(name, help=helptext, parents=[common])
        if name == "score":
            p.add_argument("target", metavar="PATH.py:FUNCTION",
                           help="a function (model, (x, y), init) -> float in a Python file")
        p.add_argument("runs", help="runs folder, study folder, consolidated runs.parquet, "
                                    "or a URI (s3://, gs://, file://)")
        p.add_argument("--out", help="output file: .csv or .parquet for rank and score; .html for report "
                                     "(default <study>/report.html)")
        p.add_argument("--include-unconverged", action="store_true", default=None,
                       help="admit runs that did not reach the target loss")
        p.add_argument("--max-cond", type=int, default=None, help="largest CMI conditioning set (default 2)")
        p.add_argument("--robust-n", type=float, default=None,
                       help="test-set size n of the robust weight (default: each run's n_test)")
        p.add_argument("--min-ess", type=float, default=None,
                       help="least effective sample size of a robust environment (default 12)")
        p.add_argument("--boots", type=int, default=None, dest="n_boot",
                       help="bootstrap replicates for the τ and CMI intervals (default 200; 0: none)")
        p.add_argument("--boot-seed", type=int, default=None, help="bootstrap seed (default 0)")
        p.add_argument("--ci", type=float, default=None, help="bootstrap interval level (default 0.95)")
        p.add_argument("--dataset-axis", action="store_true", default=None,
                       help="analyse all datasets together, with the dataset as an axis")
        p.add_argument("--allow-mixed", action="store_true", default=None,
                       help="rank measure columns whose rows were computed under different settings")
        p.add_argument("--skip-corrupt", action="store_true",
                       help="leave unreadable run files out (with a warning) instead of failing")
        if name in ("rank", "score"):
            p.add_argument("--top", type=int, default=20, help="rows printed per dataset (default 20)")
        else:
            p.add_argument("--top", type=int, default=None,
                           help="leading measures plotted against the gap, per dataset (default 6)")
        if name == "report":
            p.add_argument("--run", help="the run id (or a unique prefix) shown in depth "
                                         "(default: the median-gap network)")
        if name == "score":
            p.add_argument("--name", help="the measure's column name (default: the function's name)")
            p.add_argument("--report", help="also write the HTML report (.html)")
            p.add_argument("--serial", action="store_true", help="compute in this process, one at a time")
            p.add_argument("--address", help="Ray cluster address; default: local Ray")
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
            p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                           help="time limit of the function on one network (default 600; 0: none); "
                                "past it, that network's value is NaN")
    return ap


def _verbosity(default=0) -> argparse.ArgumentParser:
    return verbosity_flags("less output: errors only (no warnings), no progress bar", default)


def _claims_parser(sub, common) -> None:
    p = sub.add_parser("claims", help="test the seed's claims (CLAIMS.md) on one or more studies",
                       parents=[common])
    p.add_argument("runs", nargs="+", help="runs folders, study folders, consolidated runs.parquet files or URIs")
    p.add_argument("--out", action="append", default=[],
                   help="output file, .csv, .parquet, .md or .html by the extension (repeat for several)")
    p.add_argument("--claims", help="comma-separated claim ids (default: all)")
    p.add_argument("--boots", type=int, default=10_000, dest="n_boot",
                   help="bootstrap replicates of every estimate and p-value (default 10000)")
    p.add_argument("--min-ess", type=float, default=12.0,
                   help="least effective sample size of a robust environment (default 12)")
    p.add_argument("--boot-seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--include-unconverged", action="store_true", help="admit runs that did not reach the target loss")
    p.add_argument("--allow-mixed", action="store_true",
                   help="use measure columns whose rows were computed under different settings")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave unreadable run files out (with a warning) instead of failing")
    p.add_argument("--top", type=int, default=60, help="rows printed (default 60)")
    p.add_argument("--reproduction", metavar="FILE.md",
                   help="also write Dziugaite & Roy 2017's table beside the runs that hold "
                        "pacbayes_optimized_bound (Markdown; the HTML page gets it as a section)")


def _claims(args: argparse.Namespace) -> int:
    from .claims import CLAIM_FORMATS, evaluate_claims, format_claims, noise_floors, select_claims, write_claims
    from .claims.reproduction import reproduction_html, reproduction_markdown, reproduction_table

    ids = [c.strip() for c in args.claims.split(",") if c.strip()] if args.claims else None
    select_claims(ids)  # an unknown id fails before any reading
    for out in args.out:
        if os.path.splitext(out)[1].lower() not in CLAIM_FORMATS:
            raise RunsError(f"--out {out}: the claims table is written as {', '.join(CLAIM_FORMATS)}; choose one")
    frames = []
    for src in args.runs:
        df = load_runs(src, include_unconverged=True, include_failed=True,  # evaluate_claims selects
                       on_corrupt="skip" if args.skip_corrupt else "error", decoded=False)
        if "study" not in df.columns:
            df = df.with_columns(pl.lit(os.path.basename(os.path.normpath(src)) or src).alias("study"))
        frames.append(df)
    if len(frames) > 1:  # a run id counts once within a study, whichever folders hold it
        stacked = pl.concat(frames, how="diagonal_relaxed")
        table, notes = unique_runs(stacked.to_arrow(), [src for src, f in zip(args.runs, frames)
                                                         for _ in range(f.height)])
        for note in notes:
            warnings.warn(note, stacklevel=2)
        frames = [pl.from_arrow(table)]
    # decoded once stacked: the JSON columns of several studies as one struct type
    runs = decode(frames[0])
    table = evaluate_claims(runs, ids, n_boot=args.n_boot, boot_seed=args.boot_seed, min_ess=args.min_ess,
                            include_unconverged=args.include_unconverged, allow_mixed=args.allow_mixed)
    noise = noise_floors(runs, args.include_unconverged)
    print(format_claims(table, args.top, noise))
    meta = (f"runs {', '.join(args.runs)} · {args.n_boot} bootstrap replicates, seed {args.boot_seed}"
            + (" · unconverged runs admitted" if args.include_unconverged else ""))
    repro = reproduction_table(runs)
    for out in args.out:
        write_claims(table, out, meta=meta, noise=noise, extra_html=reproduction_html(repro))
        print(f"wrote {out} ({table.height} rows)")
    if args.reproduction:
        if not repro.height:
            raise RunsError(f"--reproduction {args.reproduction}: no run holds pacbayes_optimized_bound; "
                            "name it in a study's [measures] include and run `study measure`")
        write(args.reproduction, reproduction_markdown(repro))
        print(f"wrote {args.reproduction} ({repro.height} networks)")
    return 0


OPTIONS = ("include_unconverged", "max_cond", "robust_n", "min_ess", "n_boot", "boot_seed", "ci", "dataset_axis",
           "allow_mixed")


def _options(args: argparse.Namespace) -> dict:
    """The statistics options the user gave (the others keep the library defaults)."""
    return {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}


def _empty(col: pl.Series) -> bool:
    """Whether a column holds nothing for any measure (null or NaN everywhere; robust_envs all 0)."""
    if col.dtype == pl.String:
        return col.null_count() == col.len()
    v = col.cast(pl.Float64, strict=False).fill_nan(None)
    return v.null_count() == v.len() or (col.name == "robust_envs" and bool((v.fill_null(0) == 0).all()))


def format_table(table: pl.DataFrame, top: int = 20) -> str:
    """A short plain-text view of the ranking table: the first ``top`` rows of each dataset; a column
    empty for every measure (no bootstrap, no repeats, no robust environment) is left out."""
    cols = [("measure", 28), ("n_models", 8), ("tau", 7), ("tau_lo", 7), ("tau_hi", 7),
            ("reliability", 11), ("tau_ceiling", 11), ("psi", 7),
            ("cmi", 7), ("cmi_set", 24), ("robust_max", 10), ("robust_envs", 11)]
    empty = {c for c, _ in cols if c != "measure" and (c not in table.columns or _empty(table[c]))}
    if "robust_envs" in empty:
        empty.add("robust_max")
    cols = [(c, w) for c, w in cols if c not in empty]
    lines = []
    for (dataset,), part in table.group_by(["dataset"], maintain_order=True):
        lines.append(f"dataset {dataset}: {part.height} measures")
        lines.append("  ".join(f"{c:>{w}}" if c != "measure" else f"{c:<{w}}" for c, w in cols))
        for row in part.head(top).iter_rows(named=True):
            cells = []
            for c, w in cols:
                s = num(row[c], "+.3f") if c != "cmi_set" else (row[c] if row[c] else ("∅" if row[c] == "" else MISSING))
                s = s if len(s) <= w else s[: w - 1] + "…"
                cells.append(f"{s:<{w}}" if c in ("measure", "cmi_set") else f"{s:>{w}}")
            lines.append("  ".join(cells))
        if part.height > top:
            lines.append(f"… {part.height - top} more")
    return "\n".join(lines)


def _warn_small(df: pl.DataFrame, include_unconverged: bool, dataset_axis: bool) -> None:
    """The report's small-study and noise warnings, on stderr, per dataset (:mod:`analysis.floor`)."""
    from .floor import warnings_of
    from .load import population, split_datasets

    pop = population(df, include_unconverged)
    for name, part in split_datasets(pop, dataset_axis) if pop.height else []:
        for w in warnings_of(part):
            warnings.warn(f"dataset {name}: {w}", stacklevel=2)


def _rank(args: argparse.Namespace) -> int:
    """`rank`, and `score`: the same with the user's measure computed first (`_scored`)."""
    from .table import rank_table

    if args.out and os.path.splitext(args.out)[1].lower() not in TABLE_FORMATS:
        raise RunsError(f"--out {args.out}: the table is written as .csv or .parquet, choose one of those")
    opts = _options(args)
    if args.command == "score":
        df, scored = _scored(args)
        if df is None:
            return scored
    else:
        df, scored = load_runs(args.runs, include_unconverged=True, include_failed=True,  # rank_table selects
                               on_corrupt="skip" if args.skip_corrupt else "error"), ""
    table = rank_table(df, **opts)
    _warn_small(df, bool(args.include_unconverged), bool(args.dataset_axis))
    print(format_table(table, args.top))
    if scored:
        print(scored)
        for line in yours(table, df.columns[-1]):
            print(line)
    if args.out:
        write_table(table, args.out)
        print(f"wrote {args.out} ({table.height} rows × {table.width} columns)")
    if scored and args.report:
        from .report import write_report
        write_report(args.runs, args.report, runs=df, scored=name_of(df.columns[-1]), **opts)
        print(f"wrote {args.report}")
    return 0


def _scored(args: argparse.Namespace) -> tuple[pl.DataFrame | None, str | int]:
    """The runs with the user's measure (`analysis.score`), its NaNs warned of, and the line
    that says how many networks it scored; (None, exit status) when it scored none (the first
    failure's reason and traceback on stderr, exit 1) or was interrupted (130, 143 for SIGTERM)."""
    from study.executor import Executor

    from .score import score
    try:
        df, reasons, no_net = score(args.target, args.runs, name=args.name, timeout=args.timeout,
                                    skip_corrupt=args.skip_corrupt,
                                    executor=Executor(address=args.address, serial=args.serial,
                                                      progress=not (args.no_progress or args.quiet),
                                                      announce=not args.quiet))
    except KeyboardInterrupt as e:
        term = type(e).__name__ == "Terminated"
        print(f"{'stopped by SIGTERM' if term else 'interrupted'}: nothing was written (analysis score "
              "writes no row; run it again)", file=sys.stderr)
        return None, 143 if term else 130
    col = df.columns[-1]
    n = int(df[col].is_finite().sum())
    line = (f"{col}: {n} of {df.height} networks scored"
            + (f", {len(no_net)} without a checkpoint" if no_net else ""))
    if n == 0:
        print(line)
        first = next(iter(reasons.items()), None)
        why = f" The first failure, on {first[0]}:\n{first[1]}" if first else ""
        print(f"error: {col} scored no network; nothing is ranked.{why}", file=sys.stderr)
        return None, 1
    for rid, why in list(reasons.items())[:5]:
        print(f"warning: {col} is NaN on {rid}: {why.splitlines()[0]}", file=sys.stderr)
    if len(reasons) > 5:
        print(f"warning: {col} is NaN on {len(reasons) - 5} more networks", file=sys.stderr)
    return df, line


def yours(table: pl.DataFrame, col: str) -> list[str]:
    """The user's measure ``col`` in the ranking ``table``, per dataset: its rank, τ with its
    interval, Ψ and CMI, wherever it ranks (the printed head may leave it out)."""
    from study.schema import name_of
    name, lines = name_of(col), []
    for (dataset,), part in table.group_by(["dataset"], maintain_order=True):
        at = part["measure"].to_list().index(name) if name in part["measure"].to_list() else None
        where = f"dataset {dataset}: " if table["dataset"].n_unique() > 1 else ""
        if at is None:
            lines.append(f"{where}{name}: not ranked")
            continue
        r = part.row(at, named=True)
        ci = (f" [{num(r.get('tau_lo'), '+.3f')}, {num(r.get('tau_hi'), '+.3f')}]"
              if r.get("tau_lo") is not None else "")
        lines.append(f"{where}{name} (yours): rank {at + 1} of {part.height} · τ {num(r.get('tau'), '+.3f')}{ci}"
                     f" · Ψ {num(r.get('psi'), '+.3f')} · CMI {num(r.get('cmi'), '+.3f')}")
    return lines


def _report(args: argparse.Namespace) -> int:
    try:
        from .report import write_report
    except ImportError as e:
        raise RunsError(f"the report module is not available: {e}") from None
    out = args.out or default_report_path(args.runs)
    if os.path.splitext(out)[1].lower() not in (".html", ".htm"):
        raise RunsError(f"--out {out}: the report is one HTML page; give a file name ending in .html")
    opts = _options(args)
    if args.skip_corrupt:
        opts["on_corrupt"] = "skip"
    if args.top is not None:
        opts["top"] = args.top
    if args.run is not None:
        opts["run"] = args.run
    write_report(args.runs, out, **opts)
    print(f"wrote {out}")
    return 0


def _notebooks(args: argparse.Namespace) -> int:
    """Jupyter on ``analysis/notebooks`` with ``RUNS`` (the notebooks' parameter) set to the runs given."""
    import shutil
    from pathlib import Path

    jupyter = shutil.which("jupyter")
    if jupyter is None:
        raise RunsError("Jupyter is not installed: pip install -e '.[notebooks]' (from the checkout), then run "
                        "this again")
    runs = args.runs if "://" in args.runs else os.path.abspath(args.runs)
    if "://" not in runs and not os.path.exists(runs):
        raise RunsError(f"no such runs folder or file: {args.runs}")
    folder = str(Path(__file__).resolve().parent / "notebooks")
    print(f"notebooks in {folder}, RUNS={runs}", flush=True)
    os.execve(jupyter, [jupyter, "notebook" if args.classic else "lab", folder], {**os.environ, "RUNS": runs})
    return 0  # not reached


def default_report_path(runs: str) -> str:
    """Where ``report`` writes without --out: ``<study>/report.html`` for a study folder, its ``runs``
    folder or its ``runs.parquet``; ``X.html`` beside any other consolidated file ``X.parquet``."""
    base = runs.rstrip("/") or runs
    name = base.rsplit("/", 1)[-1]
    if name.endswith(".parquet") and name != "runs.parquet":
        return base[: -len(".parquet")] + ".html"
    if name in ("runs", "runs.parquet"):
        base = base.rsplit("/", 1)[0] if "/" in base else "."
    return f"{base}/report.html"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m analysis`` and the ``analysis`` console script; returns the exit status
    (141, silently, when the reader of standard output went away, as for a Unix tool in ``… | head``)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return closed_pipe()


def _main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = log_level(args.quiet, args.verbose)
    logging.basicConfig(level=level, format=LOG_FORMAT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if level >= logging.ERROR else "always")
        warnings.showwarning = _show_warning
        try:
            return {"rank": _rank, "report": _report, "score": _rank, "claims": _claims,
                    "notebooks": _notebooks}[args.command](args)
        except (RunsError, RowsError, FileNotFoundError, ValueError) as e:
            print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            return 2


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)
