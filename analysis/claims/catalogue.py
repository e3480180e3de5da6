"""The claims of CLAIMS.md as data: one `Claim` per row of its table, its statistics as `Stat`.

Nothing here computes; :mod:`analysis.claims.engine` reads these records and knows no claim by
name. Quantities are an outcome (``gap``, ``test_acc``, ``train_acc``), a column of the row
(``n_train``, ``n_test``, ``final_lr``), a setting (``lr``, ``batch_size``, …:
:func:`analysis.claims.quantities.setting`), a derived quantity
(:data:`analysis.claims.quantities.DERIVED`) or a measure name.
"""

from __future__ import annotations

from dataclasses import dataclass

NON_MONOTONIC_SCHEDULES = ("cosine_restarts", "triangular", "triangular2", "cyclic", "sgdr")
CONSTANT_SCHEDULE = "constant"


@dataclass(frozen=True)
class Stat:
    """One statistic of a claim.

    ``kind``: ``tau`` (a, b), ``psi`` (a, b over ``axes``), ``Psi`` (a, b), ``Psi_diff``
    (Ψ(a, b) − Ψ(a2, b)), ``pair`` (x = a over the two-valued axis ``axes[0]``, ``p`` → ``q``),
    ``median`` (of a), ``share`` (of runs with ``a ≥ cut``), ``max`` (of a, no interval),
    ``median_at`` (median of a at ``p`` and at each ``q``, no interval; "not recorded" without a).
    ``q_each``: a pair gets one row per value of this tuple present in the rows (``q`` unused).
    ``link``: (setting, factor): a pair links ``q``'s setting to ``factor`` × ``p``'s (relative
    tolerance 1e-6) and groups the runs on every other axis and the seed.
    ``where``: row filters (setting, value). ``side``/``threshold``: the claimed side (``>``,
    ``<``, ``>=``); None for a quantity printed in ``also``. ``all_rows``: every stored row that did
    not fail, not only the analysed population. ``min_se``: the effect must exceed this many
    binomial standard errors of test accuracy, else undecided.
    """

    label: str
    kind: str
    a: str
    b: str = ""
    a2: str = ""
    axes: tuple[str, ...] = ()
    p: object = None
    q: object = None
    q_each: tuple = ()
    link: tuple[str, float] | None = None
    where: tuple[tuple[str, object], ...] = ()
    side: str | None = ">"
    threshold: float = 0.0
    cut: float = 0.0
    all_rows: bool = False
    min_se: float = 0.0


@dataclass(frozen=True)
class Condition:
    """A condition of a claim's regime on each run: ``quantity op value`` (``value`` a number, a
    truth value or text), or ``quantity op other`` (another quantity of the same run); ``words``
    says it for a reader."""

    quantity: str
    op: str
    value: object = None
    other: str = ""
    words: str = ""


@dataclass(frozen=True)
class Claim:
    """One row of CLAIMS.md's table.

    ``stats``: the primary statistics (one verdict each; the Holm family); ``also``: quantities
    printed beside them, never decided. ``where``: row filters of every statistic. ``regime``:
    conditions a run must meet to count (not testable when none does, saying which fail).
    ``needs_any_axis``: not testable unless one of these axes varies. ``conjunction``: the claim
    holds when every statistic does (a row ``all of the above``). ``per_measure``: a template
    statistic (``a = "{m}"``) listed for every measure, sorted, without verdicts and outside the
    family; ``instrument``: the measures whose ψ must be exactly 0 (a row ``ok`` / ``broken``).
    ``show``: settings (with their default when absent) whose values are printed in ``also``.
    ``note``: added to a "needs measure" reason.
    """

    id: str
    source: str
    statement: str
    stats: tuple[Stat, ...] = ()
    also: tuple[Stat, ...] = ()
    where: tuple[tuple[str, object], ...] = ()
    regime: tuple[Condition, ...] = ()
    needs_any_axis: tuple[str, ...] = ()
    conjunction: bool = False
    per_measure: Stat | None = None
    instrument: tuple[str, ...] = ()
    show: tuple[tuple[str, object], ...] = ()
    note: str = ""


SGD = (("optimizer", "sgd"),)
SCHEDULE_PAIR = dict(axes=("lr_schedule",), p=CONSTANT_SCHEDULE, q_each=NON_MONOTONIC_SCHEDULES, link=("lr", 3.0))


def psi1(axis: str, a: str, b: str, side: str | None, **kw) -> Stat:
    """ψ over one axis."""
    return Stat(f"ψ_{axis}({a}, {b})", "psi", a, b, axes=(axis,), side=side, **kw)


def Psi(a: str, b: str = "gap") -> Stat:
    """Ψ(a, b), claimed > 0."""
    return Stat(f"Ψ({a}, {b})", "Psi", a, b)


def tau(a: str, b: str = "gap", side: str = ">", threshold: float = 0.0) -> Stat:
    """τ(a, b)."""
    return Stat(f"τ({a}, {b})", "tau", a, b, side=side, threshold=threshold)


PACBAYES_OPT = "pacbayes_optimized_bound"

CLAIMS: tuple[Claim, ...] = (
    Claim("keskar_batch_sharpness", "Keskar et al. 2017", "large batches converge to sharper minima",
          (psi1("batch_size", "batch_size", "keskar_sharpness_1e-3", ">"),),
          also=(psi1("batch_size", "batch_size", "hessian_max_eig", None),)),
    Claim("keskar_batch_gap", "Keskar et al. 2017", "large batches generalize worse",
          (psi1("batch_size", "batch_size", "gap", ">"),)),
    Claim("keskar_sharpness_predicts", "Keskar et al. 2017; Jiang et al. 2020", "ζ(w; ε) orders networks by their gap",
          (Psi("keskar_sharpness_1e-3"), tau("keskar_sharpness_1e-3"))),
    Claim("jiang_endorsed", "Jiang et al. 2020", "gradient variance, the magnitude-aware PAC-Bayes flatness "
          "and the path norm predict generalization",
          tuple(Psi(m) for m in ("grad_variance", "pacbayes_mag_flatness", "path_norm"))),
    Claim("jiang_vc_inverse", "Jiang et al. 2020", "the VC dimension is inversely correlated with generalization",
          (tau("vc_wl_log_w", side="<"), tau("params", side="<"))),
    Claim("chaudhari_flat_spectrum", "Chaudhari et al. 2019",
          "minima that generalize well have more Hessian eigenvalues near zero",
          (tau("hessian_near_zero_frac", side="<"),)),
    Claim("jastrzebski_noise_width", "Jastrzebski et al. 2018", 'a higher η/B ("stochastic noise") finds wider minima',
          (Stat("ψ_{lr,batch_size}(lr_over_batch, hessian_max_eig), plain SGD runs", "psi", "lr_over_batch",
                "hessian_max_eig", axes=("lr", "batch_size"), where=SGD, side="<"),)),
    Claim("wu_stability", "Wu et al. 2023", "SGD escapes minima whose Hessian Frobenius norm is large for its η and B",
          (Stat("ψ_{lr,batch_size}(lr/√batch_size, hessian_fro), plain SGD runs", "psi", "lr/√batch_size",
                "hessian_fro", axes=("lr", "batch_size"), where=SGD, side="<"),),
          also=(Stat("largest lr·hessian_fro/√batch_size (plain SGD runs)", "max", "lr·hessian_fro/√batch_size",
                     where=SGD, side=None),)),
    Claim("wu_fisher_tracks_hessian", "Wu et al. 2023; Kunstner et al. 2019",
          "at low loss the empirical Fisher approximates the Hessian",
          (tau("fisher_fro", "hessian_fro", threshold=0.5),),
          also=(Stat("median fisher_trace / hessian_trace", "median", "fisher_trace/hessian_trace", side=None),)),
    Claim("seong_schedules", "Seong et al. 2018", "non-monotonic, large learning-rate schedules reach flatter minima",
          (Stat("pair_lr_schedule(log hessian_max_eig)", "pair", "log hessian_max_eig", side="<", **SCHEDULE_PAIR),),
          also=(Stat("pair_lr_schedule(gap)", "pair", "gap", side=None, **SCHEDULE_PAIR),
                Stat("learning rate at the stopping step (final_lr)", "median_at", "final_lr", side=None,
                     **SCHEDULE_PAIR))),
    Claim("neyshabur_width", "Neyshabur et al. 2015", "more hidden units, same training error, smaller test error",
          (psi1("width", "width", "gap", "<"),)),
    Claim("neyshabur_sharpness_norm", "Neyshabur et al. 2017",
          "sharpness alone does not capture generalization; combined with the norm (PAC-Bayes) it does",
          (Stat("Ψ(pacbayes_init, gap) − Ψ(expected_sharpness, gap)", "Psi_diff", "pacbayes_init", "gap",
                a2="expected_sharpness"),),
          needs_any_axis=("train_size", "label_noise")),
    Claim("li_filter_sharpness", "Li et al. 2018",
          "the sharpness of filter-normalised loss slices correlates with the generalization error",
          (tau("filter_sharpness"),)),
    Claim("zhang_random_labels", "Zhang et al. 2017/2021", "the same architecture fits random labels to zero training error",
          (Stat("share with train_acc ≥ 0.99, label_noise = 1 (every run that did not fail)", "share", "train_acc",
                where=(("label_noise", 1.0),), side=">=", threshold=0.9, cut=0.99, all_rows=True),
           psi1("label_noise", "label_noise", "gap", ">")),
          conjunction=True),
    Claim("zhang_measures_see_labels", "Zhang et al. 2017/2021",
          "a measure must see the labels: data-independent measures cannot order true- vs random-label networks",
          per_measure=psi1("label_noise", "{m}", "gap", None), instrument=("params", "vc_wl_log_w", "vc_wu")),
    Claim("wen_xor_bias", "Wen et al. 2023", "adding a bias to a 2-layer MLP makes generalization impossible on XOR",
          (Stat("pair_bias(test_acc), false → true", "pair", "test_acc", axes=("bias",), p=False, q=True, side="<",
                min_se=2.0),),
          also=(Stat("pair_bias(hessian_trace)", "pair", "hessian_trace", axes=("bias",), p=False, q=True, side=None),),
          where=(("dataset", "xor"), ("model", "mlp"), ("depth", 1), ("optimizer", "sam")),
          show=(("dim", 2),)),
    Claim("hardt_train_faster", "Hardt et al. 2016", "training faster (smaller Σηₜ) generalizes better",
          (tau("step_size_sum"),)),
    Claim("dziugaite_nonvacuous", "Dziugaite & Roy 2017",
          "PAC-Bayes bounds can be non-vacuous for over-parameterised networks",
          (Stat(f"median {PACBAYES_OPT}, true-label runs", "median", PACBAYES_OPT, where=(("label_noise", 0.0),),
                side="<", threshold=0.5),
           Stat(f"median {PACBAYES_OPT}, label_noise = 1 runs", "median", PACBAYES_OPT,
                where=(("label_noise", 1.0),), side=">=", threshold=0.5)),
          regime=(Condition("n_train", ">=", 10_000, words="≥ 10,000 training examples"),
                  Condition("binary_task", "==", True, words="a binary task"),
                  Condition("model", "==", "mlp", words="an MLP"),
                  Condition("params", ">", other="n_train", words="more parameters than training examples")),
          conjunction=True,
          note="Jiang's unoptimised pacbayes_bound does not test this claim"),
)

BY_ID = {c.id: c for c in CLAIMS}
