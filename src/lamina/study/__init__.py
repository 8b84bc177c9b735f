"""`lamina study [CLAIM ...] --seeds N --out DIR [--preset cpu|gpu]`: one small experiment per claim
lamina studies (docs/studies.md), from lamina's own configs, each with a verdict by a rule stated in its report.

- `runs`: `Runner` runs (or reuses, or resumes) the `lamina fit`s of a claim under DIR/runs/
- `verdict`: `Prediction` and `decide`: not tested / supported / negligible / against /
  inconclusive from a contrast's per-seed paired differences (or interval), its predicted sign and
  margin, the planned seeds, gates, floor and ceiling; `holm` for the secondary contrasts
- `report`: `ClaimResult` (gates, per-seed values per arm, `Contrast`s with the primary one named,
  `Figure`s) -> DIR/<claim>/report.md, result.json, PNGs; DIR/index.md gathers one verdict per
  claim (its primary contrast's), then the secondary and descriptive rows
- `claim`: `Claim` (name, sentence, run(ctx) -> ClaimResult) and `StudyContext`

A claim plugs in as a module under `claims/` that defines `CLAIM = Claim(name, sentence, run)`,
and one entry in `claims.CLAIMS`. Claims: density-familiarity, sparsify-difficulty, hierarchy,
modularity and context-vs-prior (sharing the world-v2 runs of `world_runs`; sparsify-difficulty's
decoding of held-out problems: `sparsify_evaluation`), reasoning-in-pretraining,
elicitation (on reasoning-in-pretraining's runs; `rlp_runs`, `rlp_evaluation`) and finetune-fragility
(`finetune_runs`, `finetune_evaluation`); `evaluation`: what the claims that decode from checkpoints
share (held-out problems, `cached_json`, the checkpoint keys); `pilots`: the power plan read before a
claim runs (configs/study/pilots.yaml: a group its pilots say the seeds cannot power is not run).
"""

from lamina.study.claim import Claim, StudyContext
from lamina.study.claims import CLAIMS
from lamina.study.command import main, parser
from lamina.study.report import ClaimResult, Contrast, Figure, Gate, write_index, write_report
from lamina.study.runs import Run, Runner, RunSpec
from lamina.verdict import RULE, Prediction, Verdict, decide, holm


__all__ = [
    "CLAIMS",
    "Claim",
    "ClaimResult",
    "Contrast",
    "Figure",
    "Gate",
    "Prediction",
    "RULE",
    "Run",
    "RunSpec",
    "Runner",
    "StudyContext",
    "Verdict",
    "decide",
    "holm",
    "main",
    "parser",
    "write_index",
    "write_report",
]
