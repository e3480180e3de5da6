"""The claims table as text, CSV, Parquet, Markdown or one self-contained HTML page.

The Markdown and HTML forms add the noise floor of each study
(:func:`analysis.claims.engine.noise_floors`) after the table when it is given; CSV and Parquet
hold the table alone.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl

from ..load import RunsError
from ..output import MISSING, TABLE_FORMATS, esc, interval, num, page, write, write_table
from .catalogue import CLAIMS
from .engine import ALPHA, CHECKS, PLAIN, SIGNED, TINY, VERDICTS

CLAIM_FORMATS = (".csv", ".parquet", ".md", ".html")
NOISE_COLUMNS = ["study", "dataset", "n_runs", "n_test", "test_acc", "test_acc_se", "configs", "gap_sd",
                 "gap_within_sd", "icc", "seeds_needed", "low_icc"]


def _ci(r: dict) -> str:
    return interval(r["ci_low"], r["ci_high"], SIGNED, tiny=TINY)


def _p(v: float | None) -> str:
    return num(v, ".2g" if v is not None and v < 0.01 else ".3f")


def _study(r: dict) -> str:
    return r["study"] + (f"/{r['dataset']}" if r["dataset"] not in ("unknown", r["study"]) else "")


def _icc(r: dict) -> str:
    return num(r["icc"], ".2f") + (" (low)" if r["low_icc"] else "")


def family_size(table: pl.DataFrame) -> int:
    """The number of statistics in the Holm family (rows with an adjusted p)."""
    return int(table["p_holm"].is_not_null().sum()) if table.height else 0


def noise_lines(noise: pl.DataFrame) -> list[str]:
    """One line per study: its noise floor, flagged when its ICC is below 0.5."""
    return [f"{r['study']}/{r['dataset']}: {r['text']}" + (" — ICC < 0.5: the gap is mostly seed and test noise"
                                                          if r["low_icc"] else "")
            for r in noise.iter_rows(named=True)]


def format_claims(table: pl.DataFrame, top: int = 60, noise: pl.DataFrame | None = None) -> str:
    """A plain-text view: the studies' noise floor, then the first ``top`` rows of the table."""
    lines = (["noise floor of the outcome (gap):"] + ["  " + s for s in noise_lines(noise)] + [""]
             if noise is not None and noise.height else [])
    cols = [("claim", 26), ("study", 14), ("statistic", 44), ("estimate", 8), ("95 % CI", 19), ("p_holm", 7),
            ("verdict", 12), ("n_runs", 6), ("ICC", 11)]
    lines.append("  ".join(f"{c:<{w}}" for c, w in cols))
    for r in table.head(top).iter_rows(named=True):
        cells = [r["claim"], _study(r), r["statistic"], num(r["estimate"], SIGNED, tiny=TINY), _ci(r), _p(r["p_holm"]), r["verdict"],
                 num(r["n_runs"]), _icc(r)]
        lines.append("  ".join((s if len(s) <= w else s[: w - 1] + "…").ljust(w) for s, (_, w) in zip(cells, cols)))
        if r["verdict"] in ("not testable", "mixed", "broken"):
            lines.append(" " * 4 + r["reason"])
    if table.height > top:
        lines.append(f"… {table.height - top} more rows")
    lines.append(f"Holm over {family_size(table)} primary statistics; verdicts at adjusted p < {ALPHA:g}.")
    return "\n".join(lines)


_SIGNED = ("estimate", "ci_low", "ci_high")


def _md_cell(col: str, v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if col == "seeds_needed" and v == np.inf:
            return "none suffices"
        if col in ("p", "p_holm"):
            return _p(v)
        if np.isfinite(v) and v == round(v) and abs(v) >= 100:
            return f"{v:.0f}"
        return num(v, SIGNED if col in _SIGNED else PLAIN, tiny=TINY)
    # text from the rows: no HTML a Markdown renderer would run (& and < as entities)
    return str(v).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|").replace("\n", " ")


def _md_table(table: pl.DataFrame) -> str:
    head = "| " + " | ".join(table.columns) + " |\n|" + "---|" * table.width + "\n"
    return head + "".join("| " + " | ".join(_md_cell(c, v) for c, v in zip(table.columns, row)) + " |\n"
                          for row in table.iter_rows())


def claims_markdown(table: pl.DataFrame, noise: pl.DataFrame | None = None) -> str:
    """The claims table as a Markdown pipe table (every column), then the noise floor per study."""
    out = _md_table(table)
    if noise is not None and noise.height:
        out += "\n## Noise floor of the outcome\n\n" + _md_table(noise.select(NOISE_COLUMNS))
    return out


_LEFT = ("claim", "study", "statistic", "verdict", "per axis", "reliability", "reason", "also")


def _noise_html(noise: pl.DataFrame) -> str:
    head = ["study", "runs", "n_test", "SE of test accuracy", "gap SD", "within-configuration SD", "ICC",
            "configurations", "seeds for reliability 0.8"]
    body = []
    for r in noise.iter_rows(named=True):
        k = r["seeds_needed"]
        seeds = MISSING if k is None or not np.isfinite(k) else f"{max(1, int(np.ceil(k - 1e-9)))}"
        if k is not None and k == np.inf:
            seeds = "none suffices"
        cells = [f'<td class="l">{esc(_study(r))}</td>', f"<td>{r['n_runs']}</td>",
                 f"<td>{num(r['n_test'], PLAIN, tiny=TINY)}</td>", f"<td>{num(r['test_acc_se'], PLAIN, tiny=TINY)}</td>",
                 f"<td>{num(r['gap_sd'], PLAIN, tiny=TINY)}</td>", f"<td>{num(r['gap_within_sd'], PLAIN, tiny=TINY)}</td>",
                 f'<td class="{"low" if r["low_icc"] else ""}">{num(r["icc"], PLAIN, tiny=TINY)}</td>',
                 f"<td>{r['configs']}</td>", f"<td>{seeds}</td>"]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ('<h2 id="noise">Noise floor of the outcome</h2><table class="noise"><tr>'
            + "".join(f'<th class="{"l" if h == "study" else ""}">{esc(h)}</th>' for h in head) + "</tr>"
            + "".join(body) + "</table>"
            '<p class="note">Per study: the test set\'s size and the binomial standard error of test accuracy at '
            "the median accuracy; the gap's standard deviation and its pooled standard deviation within a "
            "configuration (equal hyper-parameters, across seeds); ICC = 1 − within variance / variance, over "
            "configurations with two or more seeds; the seeds per configuration whose mean gap would reach "
            "reliability 0.8 (Spearman–Brown, 4(1 − ICC)/ICC). A study with ICC below 0.5 is flagged on every "
            "row: its gap is mostly seed and test noise.</p>")


def claims_html(table: pl.DataFrame, *, title: str = "The seed's claims", meta: str = "",
                noise: pl.DataFrame | None = None, extra: str = "") -> str:
    """One self-contained HTML page of the claims table (`output.page`: no script, no link);
    ``extra``: a further section (HTML) placed after the noise floor (the reproduction table)."""
    counts = table["verdict"].value_counts()
    n = dict(zip(counts["verdict"].to_list(), counts["count"].to_list())) if table.height else {}
    kinds = [(v, v, v.replace(" ", "-")) for v in VERDICTS] + [(c, f"instrument check {c}", c) for c in CHECKS]
    summary = " · ".join(f'<span class="{cls}">{esc(label)}: {n.get(v, 0)}</span>' for v, label, cls in kinds)
    statements = {c.id: c for c in CLAIMS}
    head = ["claim", "study", "statistic", "supported when", "estimate", "95 % CI", "p", "p (Holm)", "verdict",
            "runs", "groups", "per axis", "robust max", "ICC", "reliability", "reason", "also"]
    body = []
    for r in table.iter_rows(named=True):
        c = statements.get(r["claim"])
        tip = f' title="{esc(c.source + ": " + c.statement)}"' if c else ""
        v = r["verdict"] or "listed"
        cells = [f'<td class="l"{tip}><code>{esc(r["claim"])}</code></td>', f'<td class="l">{esc(_study(r))}</td>',
                 f'<td class="t">{esc(r["statistic"])}</td>', f"<td>{esc(r['supported_when'])}</td>",
                 f"<td>{num(r['estimate'], SIGNED, tiny=TINY)}</td>", f'<td class="ci">{_ci(r)}</td>', f"<td>{_p(r['p'])}</td>",
                 f"<td>{_p(r['p_holm'])}</td>",
                 f'<td class="v {v.replace(" ", "-")}">{esc(r["verdict"] or MISSING)}</td>',
                 f"<td>{num(r['n_runs'])}</td>", f"<td>{num(r['n_groups'])}</td>",
                 f'<td class="t">{esc(r["per_axis"])}</td>', f"<td>{num(r['robust_max'], PLAIN, tiny=TINY)}</td>",
                 f'<td class="{"low" if r["low_icc"] else ""}">{esc(_icc(r))}</td>',
                 f'<td class="t">{esc(r["reliability"])}</td>', f'<td class="t">{esc(r["reason"])}</td>',
                 f'<td class="t">{esc(r["also"])}</td>']
        body.append("<tr>" + "".join(cells) + "</tr>")
    claims_list = "".join(f"<tr><td class=\"l\"><code>{esc(c.id)}</code></td><td class=\"l\">{esc(c.source)}</td>"
                          f"<td class=\"t\">{esc(c.statement)}</td></tr>" for c in CLAIMS
                          if c.id in set(table["claim"].to_list()))
    sections = [
        f"<h1>{esc(title)}</h1>",
        f'<div class="meta">{esc(meta)}</div>' if meta else "",
        f'<p class="meta">{summary}</p>',
        '<div class="wrap"><table class="claims"><tr>' + "".join(
            f'<th class="{"l" if h in _LEFT else ""}">{esc(h)}</th>' for h in head)
        + "</tr>\n" + "\n".join(body) + "</table></div>",
        f'<p class="note">p: two-sided, against the claimed threshold, from the bootstrap replicates of the '
        "estimate (runs resampled for τ and medians, whole groups for ψ and pair, configurations for Ψ, every "
        "axis regrouping the same draw); p (Holm): adjusted by Holm–Bonferroni over the "
        f"{family_size(table)} primary statistics of this table. Verdict: supported when the adjusted p is below "
        f"{ALPHA:g} and the estimate lies on the claimed side (for Ψ, with no ψ<sub>k</sub> interval entirely on "
        "the other side, else mixed, naming those axes); contradicted when the adjusted p is below "
        f"{ALPHA:g} and the estimate lies on the other side; undecided otherwise; not testable when the study "
        "lacks an axis, a measure, runs or the regime the claim needs. A share is decided by its exact one-sided "
        "95 % Clopper–Pearson bounds. The \u201calso\u201d column is printed, never decided; the per-measure rows "
        "of zhang_measures_see_labels are listed without verdicts and the instrument check (ok / broken) is no "
        "finding; neither is in the Holm family. Definitions: CLAIMS.md and ANALYSIS.md.</p>",
        _noise_html(noise) if noise is not None and noise.height else "",
        extra,
        '<h2>The claims</h2><table><tr><th class="l">id</th><th class="l">source</th>'
        '<th class="l">claim</th></tr>' + claims_list + "</table>",
    ]
    return page(title, sections)


def write_claims(table: pl.DataFrame, out: str, *, title: str = "The seed's claims", meta: str = "",
                 noise: pl.DataFrame | None = None, extra_html: str = "") -> None:
    """Write the claims table as CSV, Parquet, Markdown or HTML by the extension, atomically."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in CLAIM_FORMATS:
        raise RunsError(f"--out {out}: the claims table is written as {', '.join(CLAIM_FORMATS)}; choose one")
    if ext in TABLE_FORMATS:
        write_table(table, out)
    else:
        write(out, claims_markdown(table, noise) if ext == ".md" else
              claims_html(table, title=title, meta=meta, noise=noise, extra=extra_html))
