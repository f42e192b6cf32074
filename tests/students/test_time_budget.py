"""TimeBudget: the clock starts after the first step, so one-off start-up costs do not shorten a run."""

from transformers import TrainerControl

import dakter_hf.students.train as train_module
from dakter_hf.students.train import TimeBudget


def test_first_step_start_up_does_not_count(monkeypatch):
    clock = iter([100.0, 160.0, 185.0])  # end of step 1 (after a 90-s start-up), then +60 s, then +85 s
    monkeypatch.setattr(train_module.time, "time", lambda: next(clock))
    budget, control = TimeBudget(minutes=1.25), TrainerControl()
    for expected_stop in (False, False, True):
        control = budget.on_step_end(None, None, control)
        assert control.should_training_stop is expected_stop


def test_no_budget_never_stops():
    budget, control = TimeBudget(minutes=None), TrainerControl()
    for _ in range(3):
        control = budget.on_step_end(None, None, control)
    assert not control.should_training_stop
