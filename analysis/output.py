"""The one output layer of `analysis`: how a number, an interval and a missing value read in
every table (the command line's, the report's, the claims page's, the one-network view's); HTML
escaping; figures as PNG data URIs; the one stylesheet and page shell of every HTML page; and
the writing of tables and pages to a path or a URI, whole or not at all.

A report section is a function of the rows shown that returns HTML made with these, every
figure in it computed from those rows::

    def seeds_section(pop: pl.DataFrame) -> str:
        counts = pop.group_by("seed").agg(pl.len(), pl.col("gap").median()).sort("seed")
        rows = "".join(f"<tr><td>{esc(s)}</td><td>{num(n)}</td><td>{num(g, '.3f')}</td></tr>"
                       for s, n, g in counts.iter_rows())
        return ('<h2 id="seeds">Seeds</h2><table><tr><th>seed</th><th>runs</th>'
                f"<th>median gap</th></tr>{rows}</table>")

and `report.write_report` lists it among the page's sections; `page` gives any set of sections
the shell and `STYLE` (a rule a section needs goes there, not into the section).
"""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np

from study.schema import write_atomic

#: How a missing value reads everywhere: None, NaN, ±inf, a statistic not computed.
MISSING = "–"


def num(v, spec: str = ".3f", *, unit: str = "", tiny: float = 0.0) -> str:
    """``v`` as text: a real number with the format ``spec`` (then ``unit``), an integer as an
    integer, a bool or anything else as ``str(v)``; `MISSING` for None, NaN and ±inf. ``tiny``:
    a number of smaller magnitude reads as 0 (no ``-1e-17`` where a sum cancels)."""
    if v is None:
        return MISSING
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v)}{unit}"
    if not np.isfinite(v):
        return MISSING
    return format(0.0 if abs(v) < tiny else v, spec) + unit


def interval(lo, hi, spec: str = ".3f", **kw) -> str:
    """``[lo, hi]`` each as `num` reads it; `MISSING` when either bound is None."""
    return MISSING if lo is None or hi is None else f"[{num(lo, spec, **kw)}, {num(hi, spec, **kw)}]"


def esc(x) -> str:
    """``str(x)`` escaped for HTML text and quoted attribute values."""
    return html.escape(str(x), quote=True)


def png_uri(fig, dpi: int) -> str:
    """A matplotlib figure as a ``data:image/png;base64,…`` URI (the page stays one file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


#: The one stylesheet: the page, its tables and figures, the ranking table's controls and the
#: scatter's pointer (`interactive`), the one-network view, the claims' verdicts.
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
     color:#222;max-width:1240px;margin:0 auto;padding:18px 28px 60px;background:#fff}
h1{font-size:24px;margin:8px 0 2px}h2{font-size:19px;margin:34px 0 8px;border-bottom:1px solid #ddd;
   padding-bottom:3px}h3{font-size:16px;margin:22px 0 6px}
.meta{color:#666;font-size:12.5px}.note{color:#555;font-size:13px;max-width:900px}
nav{margin:10px 0 0;font-size:13px}nav a{margin-right:14px;color:#2a5db0;text-decoration:none}
table{border-collapse:collapse;font-size:12px;margin:6px 0 10px}
th,td{padding:3px 5px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f6f6f6;border-bottom:1px solid #ccc;font-weight:600}
td.l,th.l{text-align:left}.wrap{overflow-x:auto}
.kv td{text-align:left;border:none;padding:1px 14px 1px 0}.kv td:first-child{color:#555}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto}
figcaption{color:#555;font-size:12.5px;max-width:900px}
code{background:#f3f3f3;padding:0 3px;border-radius:3px;font-size:12px}
.err{color:#a33}td.ci,th.ci{color:#777;font-size:11px}
.warn{border:2px solid #c77700;background:#fff4df;padding:8px 12px;margin:14px 0;max-width:1000px}
.headline{font-size:14.5px;max-width:1000px}.headline p,.headline .para{margin:4px 0}
td.wide{color:#aaa!important;background:#f1f1f1!important}
.rank-ctl{font-size:12.5px;margin:8px 0 2px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
.rank-ctl[hidden]{display:none}.rank-ctl input[type=search]{width:200px}.rank-ctl .count{color:#666}
table.rank th.sort{cursor:pointer;user-select:none}table.rank th.sort:hover{background:#e9eef7}
table.rank th[aria-sort=descending]::after{content:" ▼";font-size:9px}
table.rank th[aria-sort=ascending]::after{content:" ▲";font-size:9px}
table.rank td.def{text-decoration:underline dotted #999;cursor:help}
table.rank tr.fam-head td{background:#eef2f8;font-weight:600;text-align:left;color:#334}
figure.queryable .pts{position:relative;display:inline-block;max-width:100%;line-height:0}
figure.queryable .pts img{cursor:crosshair}
.pt-mark{position:absolute;width:12px;height:12px;margin:-7px 0 0 -7px;border:2px solid #000;
         border-radius:50%;pointer-events:none}
.pt-tip{position:absolute;z-index:5;background:#fff;border:1px solid #888;box-shadow:0 2px 6px rgba(0,0,0,.2);
        padding:5px 8px;font-size:12px;line-height:1.4;white-space:pre;pointer-events:none;color:#222}
.netfig{max-width:100%}.netpos td,.netruns td{font-variant-numeric:tabular-nums}
.netpos tr.outcome td{font-weight:600}.pbar{display:inline-block;position:relative;width:90px;
height:8px;background:#e8e8e8;border-radius:4px}.pbar span{position:absolute;top:-2px;width:4px;
height:12px;margin-left:-2px;background:#c0392b}.netruns tr.chosen td{background:#fff3c4}.netruns tr[data-run]{cursor:pointer}
td.v{font-weight:600;text-align:left}.supported{background:#d9f0d3;color:#1b5e20}
.mixed{background:#e4dcf3;color:#4a2a82}.contradicted{background:#f8d7d3;color:#8e1b10}
.undecided{background:#fdf1c7;color:#6d5200}.not-testable{background:#eee;color:#555}
.ok{background:#e3eef9;color:#174a7c}.broken{background:#f8d7d3;color:#8e1b10}
td.low{background:#fff4df;color:#8a4b00;font-weight:600}
td.t{text-align:left;white-space:normal;min-width:260px;max-width:420px}
svg text.ax{font-size:11px;fill:#555}svg text.lab{font-size:11.5px;fill:#222}svg text.num{font-size:11px;fill:#333}
svg tspan.fold,span.fold{fill:#777;color:#777;font-size:11px}.forest-row.scored text.lab{font-weight:700}
tr.scored td{background:#fff1b8!important;font-weight:600}option.scored,th.scored,text.scored{font-weight:700}
svg.scatter .pt{fill:#1f4e79;fill-opacity:.65;cursor:pointer}svg.scatter .pt:hover{fill:#c0392b;fill-opacity:1}
svg.scatter .pt.out{display:none}svg.pcoords .pc-line{fill:none;stroke:#1f4e79;stroke-opacity:.35;stroke-width:1}
svg.pcoords .pc-line.out{stroke:#ddd;stroke-opacity:.5}svg.pcoords .pc-hit{cursor:ns-resize}
svg.pcoords .pc-brush{fill:#c0392b;fill-opacity:.18;stroke:#c0392b}svg.pcoords .pc-axis.scored text.pc-name{font-weight:700}
.netlist{max-height:340px;overflow-y:auto}#net-table tr.net{cursor:pointer}#net-table tr.net:hover td{background:#eef2f8}
#net-table tr.open td{background:#fff3c4}#net-view{border:1px solid #ccd;padding:4px 12px;margin:10px 0;background:#fdfdff}
details.inline{display:inline}details.inline summary{display:inline;cursor:pointer;color:#2a5db0}
.net-panels{display:flex;flex-wrap:wrap;gap:8px}.net-panel{margin:4px 0}.net-panel figcaption{font-size:11.5px}
"""


def page(title: str, sections: list[str], script: str = "") -> str:
    """One self-contained HTML page: ``title``, `STYLE`, the ``sections`` (HTML, in order; empty
    ones left out) and an inline ``script`` (HTML, e.g. ``<script>…</script>``); nothing fetched."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(s for s in sections if s) + "\n" + (script + "\n" if script else "")
            + "</body></html>\n")


TABLE_FORMATS = (".csv", ".parquet")


def write(out: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to a path or a pyarrow.fs URI, whole or not at all."""
    write_atomic(os.fspath(out), data.encode("utf-8") if isinstance(data, str) else data)


def write_table(table, out: str) -> None:
    """Write a polars table as CSV or Parquet by the extension (`TABLE_FORMATS`), atomically."""
    buf = io.BytesIO()
    (table.write_csv if os.path.splitext(out)[1].lower() == ".csv" else table.write_parquet)(buf)
    write(out, buf.getvalue())
