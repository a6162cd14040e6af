"""What an SP run records: the EA manager's generations and the result."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ManagerGeneration:
    """One generation of the EA manager.

    Attributes:
        generation: 1, 2, ...
        budgets: The best gene's budget per stage, as fractions of the
            unpruned network's MACs.
        loss: Its fitness (summed best stage losses).
        stage_losses: The best stage loss per stage under those budgets.
        stage_eas: Stage EAs run so far.
        seconds: Wall time of the generation.
    """

    generation: int
    budgets: tuple
    loss: float
    stage_losses: tuple
    stage_eas: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class SPResult:
    """The sub-network SP chose.

    Attributes:
        keep_counts: Channels kept per group.
        flops_fraction: Its FLOPs over the unpruned network's.
        budgets: The stage budgets it was searched under (fractions of the
            unpruned MACs; rescaled from the manager's best to bring the
            whole network near the target).
        stage_losses: Each stage's distillation loss.
        stage_curves: Per stage, the best loss after each generation of the
            stage EA that chose it.
        repairs: Rescaled budget rounds it took.
        topped_up: Whether single channels were added at the end to land
            within the tolerance.
    """

    keep_counts: np.ndarray
    flops_fraction: float
    budgets: tuple
    stage_losses: tuple
    stage_curves: tuple
    repairs: int
    topped_up: bool
