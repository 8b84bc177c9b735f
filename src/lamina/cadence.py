"""`Cadence`: when a periodic evaluation runs during a fit, in one place.

The instrumentation's two tiers, drift, retention and the thinking evaluator each run at step 0
(before the first optimizer step), every `every_n_steps` optimizer steps, and after the last step,
each step at most once: the micro-batches of an accumulated step share its `global_step`, and a
resumed run must not measure again the step its checkpoint already measured. The owner keeps
`state_dict()` in its own (Lightning saves a callback's state in the checkpoint).

    cadence = Cadence(every_n_steps=100)
    on_train_start:      if cadence.starts(trainer): evaluate(); cadence.ran(trainer)
    on_train_batch_end:  if cadence.due(trainer):    evaluate(); cadence.ran(trainer)
    on_train_end:        if cadence.ends(trainer):   evaluate(); cadence.ran(trainer)
"""

from __future__ import annotations

from dataclasses import dataclass


def is_last_step(trainer) -> bool:
    """Whether the trainer has taken its last optimizer step (max_steps reached)."""
    return trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step


def multiple_of(step: int, every: int | None) -> bool:
    """`step` is a multiple of `every` (never when `every` is None or 0)."""
    return bool(every) and step % every == 0


@dataclass
class Cadence:
    """Every `every_n_steps` optimizer steps (None or 0: only at the start and the end), at step 0
    if `at_start`, after the last step if `at_end`; `last_step` is the step that ran last."""

    every_n_steps: int | None
    at_start: bool = True
    at_end: bool = True
    last_step: int | None = None

    def starts(self, trainer) -> bool:
        """In on_train_start: step 0 of a fresh run (a run resumed at step 0 measured it already)."""
        return self.at_start and trainer.global_step == 0 and self.last_step != 0

    def due(self, trainer) -> bool:
        """In on_train_batch_end: a multiple of every_n_steps or the last step, not yet run."""
        step = trainer.global_step
        if step == self.last_step:
            return False
        return multiple_of(step, self.every_n_steps) or (self.at_end and is_last_step(trainer))

    def ends(self, trainer) -> bool:
        """In on_train_end: the run stopped at a step that has not run (an early stop, a time limit)."""
        return self.at_end and trainer.global_step != self.last_step

    def ran(self, trainer) -> None:
        self.last_step = trainer.global_step

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = state.get("last_step")
