"""Training budgets: how a method spends a given number of epochs.

A comparison at equal cost gives every method the same number of epochs
over the training data after the baseline, counting every epoch that
updates the network's weights: soft-pruning epochs, a super-net's
training, a search's warm-up fine-tune, and the fine-tuning after the
method. Each method says how it fits its paper's schedule into that
budget through `PruningMethod.training_budget(epochs, options)`, which
returns a `TrainingBudget`; callers (`benchmarks/compare.py`) run the
method with `budget.options` and then fine-tune for
`budget.finetune_epochs`, without knowing the method. Work that updates
no weights (scoring, evaluating candidates, training gates or a criteria
sampler on a frozen network) is not counted here; callers report it in
seconds.
"""

import dataclasses
import numbers


@dataclasses.dataclass(frozen=True)
class TrainingBudget:
    """How a method spends `epochs` epochs of weight updates.

    Attributes:
        epochs: The budget: epochs over the training data that update the
            network's weights, after the baseline.
        options: Option values the method runs with to spend its share
            (e.g. `{"epochs": 8, "recovery_epochs": 2}` for soft pruning).
        phases: `(name, epochs)` pairs, in order, of the weight training
            the method does itself during `run` (an upper bound where a
            phase sees part of the training set, e.g. EKG's subset
            fine-tune).
        finetune_epochs: Epochs of the separate fine-tuning after `run`.
    """

    epochs: int
    options: dict = dataclasses.field(default_factory=dict)
    phases: tuple = ()
    finetune_epochs: int = 0

    def __post_init__(self):
        check_epochs(self.epochs)
        object.__setattr__(self, "phases", tuple(map(tuple, self.phases)))
        spent = sum(e for _, e in self.phases) + self.finetune_epochs
        if any(e < 0 for _, e in self.phases) or self.finetune_epochs < 0:
            raise ValueError(
                "Budget phases should have epochs >= 0. Received: "
                f"phases={self.phases}, finetune_epochs="
                f"{self.finetune_epochs}"
            )
        if spent != self.epochs:
            raise ValueError(
                f"A training budget's phases should add up to its "
                f"{self.epochs} epochs. Received: phases={self.phases}, "
                f"finetune_epochs={self.finetune_epochs} ({spent} epochs)"
            )

    @property
    def method_epochs(self):
        """Epochs of weight training during the method's own `run`."""
        return sum(e for _, e in self.phases)

    def split(self):
        """`{phase: epochs}`, the method's phases then "finetune" (phases
        of no epochs left out)."""
        split = {name: e for name, e in self.phases if e}
        if self.finetune_epochs:
            split["finetune"] = self.finetune_epochs
        return split


def check_epochs(epochs, minimum=1):
    """Returns `epochs` if it is an integer >= `minimum`, else raises."""
    if (
        isinstance(epochs, bool)
        or not isinstance(epochs, numbers.Integral)
        or epochs < minimum
    ):
        raise ValueError(
            f"A training budget should be an integer of at least {minimum} "
            f"epochs. Received: epochs={epochs!r}"
        )
    return int(epochs)
