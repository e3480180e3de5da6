"""The statistics of the analysis layer (ANALYSIS.md), as pure functions over numpy arrays.

Every function takes the generalization gaps ``g`` (shape ``(n,)``) and the
measure values ``mu`` (shape ``(n,)`` or ``(n, M)``, one column per measure)
of the same runs. Runs whose ``g`` is not finite are left out of every
statistic; runs whose ``mu`` is NaN or infinite are left out for that measure
only. Hyperparameter axes are given as integer codes, shape ``(n, K)``.

- :mod:`.tau`: Kendall's τ-a (Jiang et al. 2020), O(n log n).
- :mod:`.psi`: granulated τ, ψ_k per axis and Ψ (Jiang et al. 2020).
- :mod:`.cmi`: conditional mutual information over conditioning sets (Jiang et al. 2020).
- :mod:`.robust`: robust sign-error over environments (Dziugaite et al. 2020).
- :mod:`.bootstrap`: seeded bootstrap intervals for τ and CMI.
- :mod:`.reliability`: test–retest reliability from repeated draws, and its τ ceiling
  (takes the values' standard deviations and repeat counts instead of ``g``).
"""

from .bootstrap import bootstrap_intervals
from .cmi import CMIResult, cmi_scores
from .psi import granulated_tau
from .reliability import ReliabilityResult, reliability, tau_ceiling
from .robust import RobustResult, robust_sign_error
from .tau import kendall_tau_a

__all__ = ["kendall_tau_a", "granulated_tau", "cmi_scores", "CMIResult",
           "robust_sign_error", "RobustResult", "bootstrap_intervals", "reliability",
           "ReliabilityResult", "tau_ceiling"]
