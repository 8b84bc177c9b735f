"""lamina.cadence.Cadence: the one schedule of the instrumentation's tiers, drift, retention and
the thinking evaluator."""

from __future__ import annotations

from types import SimpleNamespace

from lamina.cadence import Cadence


def run(cadence: Cadence, max_steps: int, micro_batches: int = 1, stop_at: int | None = None) -> list[int]:
    """The steps at which `cadence` fires over a fit, driven as the callbacks drive it."""
    fired = []
    trainer = SimpleNamespace(global_step=0, max_steps=max_steps)
    if cadence.starts(trainer):
        fired.append(0), cadence.ran(trainer)
    for step in range(1, (stop_at or max_steps) + 1):
        trainer.global_step = step
        for _ in range(micro_batches):  # every micro-batch of the step ends with the same global_step
            if cadence.due(trainer):
                fired.append(step), cadence.ran(trainer)
    if cadence.ends(trainer):
        fired.append(trainer.global_step), cadence.ran(trainer)
    return fired


def test_start_every_n_and_the_end_once_each():
    assert run(Cadence(4), 10) == [0, 4, 8, 10]
    assert run(Cadence(4), 10, micro_batches=3) == [0, 4, 8, 10]
    assert run(Cadence(5), 10) == [0, 5, 10]
    assert run(Cadence(None), 10) == [0, 10]  # only at the start and the end
    assert run(Cadence(4), 10, stop_at=6) == [0, 4, 6]  # an early stop: measured where it stopped
    assert run(Cadence(4, at_start=False, at_end=False), 10) == [4, 8]  # the light tier's


def test_a_resumed_run_does_not_measure_its_checkpointed_step_again():
    first = Cadence(4)
    assert run(first, 10, stop_at=4) == [0, 4]
    resumed = Cadence(4)
    resumed.load_state_dict(first.state_dict())
    trainer = SimpleNamespace(global_step=4, max_steps=10)
    assert not resumed.starts(trainer) and not resumed.due(trainer)
    trainer.global_step = 8
    assert resumed.due(trainer)
    # A run resumed from a checkpoint saved at step 0 (after its step-0 measurement) skips it.
    at_zero = Cadence(4, last_step=0)
    assert not at_zero.starts(SimpleNamespace(global_step=0, max_steps=10))
