"""The seed's claims as tests (CLAIMS.md): the catalogue as data (:mod:`.catalogue`), what a claim
reads from the rows (:mod:`.quantities`), the engine that computes, adjusts and decides
(:mod:`.engine`) and the writers (:mod:`.write`)."""

from .catalogue import BY_ID, CLAIMS, Claim, Condition, Stat
from .engine import CHECKS, CLAIM_COLUMNS, VERDICTS, evaluate_claims, noise_floors, select_claims
from .quantities import setting
from .write import CLAIM_FORMATS, claims_html, claims_markdown, format_claims, write_claims

__all__ = ["BY_ID", "CLAIMS", "Claim", "Condition", "Stat", "CLAIM_COLUMNS", "CHECKS", "VERDICTS",
           "evaluate_claims", "noise_floors", "select_claims", "setting", "CLAIM_FORMATS", "claims_html",
           "claims_markdown", "format_claims", "write_claims"]
