"""Claims checked: each paper's headline claim as a reproducible experiment with a verdict.

* :mod:`leaderboard.claims.spec`: what a claim is (typed), the verdicts;
* :mod:`leaderboard.claims.registry`: the claims (data, versioned);
* :mod:`leaderboard.claims.rules`: the decision rules (pure);
* :mod:`leaderboard.claims.evidence`: stored results to a verdict.

``ngbench claims run`` (``harness/claims.py``) runs what each claim needs; the site's Claims
page shows the verdicts.
"""

from leaderboard.claims.evidence import outcome
from leaderboard.claims.registry import CLAIMS, claims, get_claim
from leaderboard.claims.spec import ApproxExperiment, Arm, Claim, Outcome, Rule, RunExperiment, Verdict

__all__ = [
    "CLAIMS",
    "ApproxExperiment",
    "Arm",
    "Claim",
    "Outcome",
    "Rule",
    "RunExperiment",
    "Verdict",
    "claims",
    "get_claim",
    "outcome",
]
