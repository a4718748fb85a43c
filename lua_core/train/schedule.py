"""The v1 curriculum: three stages, the learning rate inside a stage, the single-head phase, and fitting the stage
lengths to a time budget. Pure functions of the step and the stage lengths: the schedule a run follows is the
trainer's own state (it can be refitted at run time), never written back into the config."""

from __future__ import annotations

from collections.abc import Sequence

import torch

STAGE_NAMES = ("I-latent", "II-latent+pixel", "III-pixel")
FIT_AFTER_STEPS = 30  # steps timed before --fit-minutes rescales the curriculum
# the fitted curriculum aims at this share of the budget: the timed steps leave out validation, saves and export
FIT_BUDGET_SHARE = 0.92
FIT_FACTOR_RANGE = (0.05, 4.0)  # a fit never shrinks the curriculum below 5 % or stretches it past 4x


def stage_at(step: int, stages: Sequence[int]) -> tuple[int, int, int]:
    """(stage index, step within stage, stage length) for a global step."""
    start = 0
    for i, n in enumerate(stages):
        if step < start + n:
            return i, step - start, n
        start += n
    return len(stages) - 1, stages[-1], stages[-1]


def lr_factor(step: int, stages: Sequence[int], milestones: Sequence[float], gamma: float) -> float:
    """Step decay restarted in each stage: gamma^(milestones of the current stage passed)."""
    _, in_stage, stage_len = stage_at(step, stages)
    return gamma ** sum(in_stage >= m * stage_len for m in milestones)


def heads_at(step: int, stages: Sequence[int], scales: Sequence[int], single_head_fraction: float) -> list[int]:
    """The heads trained at `step`: all of them, or one drawn at random in the final fraction of each stage."""
    _, in_stage, stage_len = stage_at(step, stages)
    if in_stage < (1 - single_head_fraction) * stage_len or len(scales) < 2:
        return list(scales)
    # drawn from the step number, not a per-rank generator, so every DDP rank trains the same head
    pick = torch.randint(0, len(scales), (1,), generator=torch.Generator().manual_seed(step)).item()
    return [scales[pick]]


def fit_stages(
    stages: Sequence[int], step: int, sec_per_step: float, elapsed: float, minutes: float
) -> tuple[int, ...]:
    """Every stage scaled by one factor so the curriculum ends inside `minutes` (the same shares per stage)."""
    budget_steps = step + max(0.0, minutes * 60 * FIT_BUDGET_SHARE - elapsed) / sec_per_step
    low, high = FIT_FACTOR_RANGE
    factor = min(high, max(low, budget_steps / sum(stages)))
    fitted = [max(1, round(n * factor)) if n else 0 for n in stages]
    first = next(i for i, n in enumerate(fitted) if n)
    fitted[first] = max(fitted[first], step + 1)  # the current step stays where it is in the curriculum
    return tuple(fitted)
