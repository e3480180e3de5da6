"""A paper's table beside this instrument's: Dziugaite & Roy 2017 (Table 1), the optimised
PAC-Bayes bound of ``pacbayes_optimized_bound`` on every network of the runs that hold it.

`reproduction_table` gives one row per network: its size, its training and test error, the
stochastic network Q's mean training error ê_m and mean test error over the same m draws,
KL(Q‖P), the prior variance λ, Langford & Caruana's ê⁺ and the bound, with Jiang's
unoptimised ``pacbayes_bound`` beside it; `reproduction_markdown` and `reproduction_html`
put it beside the paper's published figures (`PAPER`), the differences of setting named.
The figures of Q come from the row's ``artifact.pacbayes_optimized_parts``
(``study.schema.ARTIFACTS`` names its entries).
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from study.schema import ARTIFACTS, artifact_col, measure_col

from ..output import esc, num

PARTS = ARTIFACTS["pacbayes_optimized_parts"]
BOUND = measure_col("pacbayes_optimized_bound")

#: What Dziugaite & Roy 2017 report (Table 1), as CLAIMS.md quotes it: binary MNIST (digit ≥ 5),
#: 55,000 training examples, SGD-trained MLPs of up to ~1M parameters.
PAPER = {
    "data": "binary MNIST (label: digit ≥ 5), 55,000 training examples",
    "rows": [
        ("one hidden layer of 600 units, true labels", "< 0.02", "0.161"),
        ("other MLPs (up to ~1M parameters), true labels", "< 0.02", "about 0.16–0.2"),
        ("one hidden layer of 600 units, random labels", "≈ 0.5", "vacuous"),
    ],
}

COLUMNS = ["study", "run_id", "seed", "label_noise", "architecture", "params", "n_train", "converged",
           "train_error", "test_error", "q_train_error", "q_test_error", "kl", "lambda", "e_plus", "slack", "m",
           "bound", "pacbayes_bound"]


def _architecture(config) -> str:
    cfg = config if isinstance(config, dict) else json.loads(config) if config else {}
    o = cfg.get("model_options") or {}
    depth, width = o.get("depth", 2), o.get("width", 64)
    return f"{depth} × {width}" if depth and depth > 1 else f"1 × {width}"


def reproduction_table(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per run with a finite ``pacbayes_optimized_bound`` (`COLUMNS`), ordered by study,
    label noise, architecture and seed; empty when no run holds the bound."""
    col = artifact_col(PARTS.name)
    if BOUND not in runs.columns or col not in runs.columns:
        return pl.DataFrame(schema={c: pl.Float64 for c in COLUMNS})
    have = runs.filter(pl.col(BOUND).is_not_null() & pl.col(BOUND).is_finite())
    rows = []
    for r in have.iter_rows(named=True):
        parts = dict(zip(PARTS.labels, r[col] or []))
        noise = r.get("hp.label_noise")
        if noise is None:
            cfg = r.get("config")
            cfg = cfg if isinstance(cfg, dict) else json.loads(cfg) if cfg else {}
            noise = (cfg.get("data") or {}).get("label_noise", 0.0)
        rows.append({
            "study": r.get("study"), "run_id": r["run_id"], "seed": r.get("seed"), "label_noise": float(noise),
            "architecture": _architecture(r.get("config")), "params": r.get(measure_col("params")),
            "n_train": r.get("n_train"), "converged": r.get("converged"),
            "train_error": 1 - r["train_acc"], "test_error": 1 - r["test_acc"],
            "q_train_error": parts.get("e_m"), "q_test_error": parts.get("test_error"), "kl": parts.get("kl"),
            "lambda": parts.get("lambda"), "e_plus": parts.get("e_plus"), "slack": parts.get("slack"),
            "m": parts.get("m"), "bound": r[BOUND], "pacbayes_bound": r.get(measure_col("pacbayes_bound")),
        })
    if not rows:
        return pl.DataFrame(schema={c: pl.Float64 for c in COLUMNS})
    out = pl.DataFrame(rows, infer_schema_length=None).select(COLUMNS)
    return out.sort(["study", "label_noise", "architecture", "seed"])


def _spec(v) -> str:
    """The format of one figure of the table: thousands separated for counts and large values,
    3 significant digits below 0.001, else 3 decimals."""
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and np.isfinite(v) and abs(v) >= 100):
        return ",.0f"
    return ".3g" if isinstance(v, float) and 0 < abs(v) < 1e-3 else ".3f"


_HEAD = ["labels", "network", "weights (ω)", "n", "train err", "test err", "Q train err ê_m", "Q test err", "KL", "λ",
         "ê⁺ (m draws)", "bound", "Jiang's pacbayes_bound"]


def _cells(r: dict) -> list[str]:
    labels = "random" if r["label_noise"] == 1 else "true" if r["label_noise"] == 0 else f"noise {r['label_noise']:g}"
    figures = [num(r[k], _spec(r[k])) for k in ("params", "n_train", "train_error", "test_error", "q_train_error",
                                                "q_test_error", "kl", "lambda")]
    e_plus = num(r["e_plus"], _spec(r["e_plus"])) + ("" if r["m"] is None else f" (m = {num(r['m'], ',.0f')})")
    return [labels, f"{r['architecture']} (seed {r['seed']})", *figures, e_plus,
            num(r["bound"], _spec(r["bound"])), num(r["pacbayes_bound"], _spec(r["pacbayes_bound"]))]


def summary(table: pl.DataFrame) -> str:
    """One sentence: the median bound on true and on random labels, against 0.5 (the trivial
    predictor's error on a binary task)."""
    parts = []
    for noise, name in ((0.0, "true labels"), (1.0, "random labels")):
        b = table.filter(pl.col("label_noise") == noise)["bound"]
        if len(b):
            med = float(b.median())
            verdict = "non-vacuous (below 0.5)" if med < 0.5 else "vacuous (0.5 or more)"
            parts.append(f"on {name} the median bound over {len(b)} network{'s' * (len(b) > 1)} is "
                         f"{med:.3f}, {verdict}")
    return ("; ".join(parts) + ".") if parts else "No network holds pacbayes_optimized_bound."


DIFFERENCES = (
    "Data: binary Fashion-MNIST (classes 0–4 → 0, 5–9 → 1), not MNIST, which cannot be read offline here; "
    "its classes are harder to separate (a 600-unit MLP errs on ~6 % of the test set, on MNIST below 2 %).",
    "Training-set size: the study's n (the bound's complexity term is divided by n − 1: fewer examples, a "
    "looser bound).",
    "Draws: m posterior draws for ê⁺ (the paper: 150,000), so Langford & Caruana's slack ê⁺ − ê_m is larger.",
    "Optimisation: `pacbayes_optimized_steps` Adam steps (10,000 in configs/claims/dziugaite_roy.toml) "
    "on (w_Q, log s, log λ) with a 30× smaller rate on w_Q "
    "(study/measures/pacbayes_optimized.py), not the paper's long RMSprop run.",
)


def reproduction_markdown(table: pl.DataFrame, title: str = "Dziugaite & Roy 2017, Table 1, beside this "
                          "instrument") -> str:
    """The reproduction as a Markdown page: the paper's figures, this study's table, the
    differences of setting, and the summary sentence."""
    lines = [f"# {title}", "", "## What the paper reports", "",
             f"Dziugaite & Roy 2017, *Computing nonvacuous generalization bounds for deep (stochastic) neural "
             f"networks with many more parameters than training data*, Table 1: {PAPER['data']}.", "",
             "| network | test error (SGD) | optimised PAC-Bayes bound |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in PAPER["rows"]]
    lines += ["", "## This instrument", "", summary(table), "",
              "| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in table.iter_rows(named=True)]
    lines += ["", "Errors are rates (1 − accuracy); Q's errors are means over the same m draws of the optimised "
              "posterior (the test error is never used by the bound); the bound holds with probability ≥ 0.965 "
              "over the sample and the draws (δ = 0.025, δ′ = 0.01). `pacbayes_bound` is Jiang et al.'s, with a "
              "searched, unoptimised σ. ω counts the weights (Jiang's `params`, biases left out); the posterior "
              "perturbs every parameter, biases included.", "", "## Differences of setting", ""]
    lines += [f"- {d}" for d in DIFFERENCES]
    return "\n".join(lines) + "\n"


def reproduction_html(table: pl.DataFrame) -> str:
    """The reproduction as a section of the claims page (empty when no run holds the bound)."""
    if not table.height:
        return ""
    paper = "".join(f"<tr><td class=\"l\">{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td></tr>"
                    for a, b, c in PAPER["rows"])
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < 2 else ""}">{esc(c)}</td>' for i, c in enumerate(_cells(r)))
                   + "</tr>" for r in table.iter_rows(named=True))
    return ('<h2 id="reproduction">Dziugaite &amp; Roy 2017, Table 1, beside this instrument</h2>'
            f'<p class="meta">The paper: {esc(PAPER["data"])}.</p><table><tr><th class="l">network</th>'
            f"<th>test error (SGD)</th><th>optimised bound</th></tr>{paper}</table>"
            f"<p>{esc(summary(table))}</p><div class=\"wrap\"><table><tr>"
            + "".join(f'<th class="{"l" if i < 2 else ""}">{esc(h)}</th>' for i, h in enumerate(_HEAD))
            + f"</tr>{body}</table></div><ul class=\"note\">"
            + "".join(f"<li>{esc(d)}</li>" for d in DIFFERENCES) + "</ul>")
