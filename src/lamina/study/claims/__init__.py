"""The research note's claims, one module each: its name and sentence, its primary contrast, its
margins (each with its reason, fixed before any run) and its gates at the top, then its `run(ctx)`
and `CLAIM`. Five read the shared world-v2 runs (lamina.study.world_runs); reasoning-in-pretraining,
elicitation (on reasoning-in-pretraining's runs) and finetune-fragility train their own (their runs
and evaluations: lamina.study.rlp_runs, rlp_evaluation, finetune_runs, finetune_evaluation). What
the claims that decode from checkpoints share is lamina.study.evaluation.

`CLAIMS`: every claim by name, in the research note's order (index.md lists them so).
"""

from lamina.study.claim import Claim
from lamina.study.claims import (
    context_vs_prior,
    density_familiarity,
    elicitation,
    finetune_fragility,
    hierarchy,
    modularity,
    reasoning_in_pretraining,
    sparsify_difficulty,
)

CLAIMS: dict[str, Claim] = {
    module.CLAIM.name: module.CLAIM
    for module in (density_familiarity, sparsify_difficulty, hierarchy, modularity, reasoning_in_pretraining,
                   elicitation, finetune_fragility, context_vs_prior)
}

__all__ = ["CLAIMS"]
