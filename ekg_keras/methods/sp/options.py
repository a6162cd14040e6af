"""The knobs of SP (defaults: the paper's CIFAR-10 settings)."""

import dataclasses

from ekg_keras.methods.sp import widths as widths_lib
from ekg_keras.methods.sp.evolution import EvolutionSettings
from ekg_keras.methods.sp.manager import PARALLEL_MODES


@dataclasses.dataclass(frozen=True)
class SPOptions:
    """Options of SP (defaults: the paper's CIFAR-10 settings, Sec. 4.1).

    Attributes:
        supernet_epochs: Epochs of super-net training (50; ImageNet 100;
            the trainers' `--search_epochs`).
        learning_rate: Its SGD learning rate (0.025; ImageNet 0.1).
        momentum: Its SGD momentum (0.9).
        weight_decay: Its weight decay (3e-4).
        decay_every: The learning rate is multiplied by `decay_rate` every
            this many epochs (10; ImageNet 30).
        decay_rate: That factor (0.1).
        val_per_class: Training samples per class held out to score
            sub-networks (200; ImageNet 50), at most half of a class.
        criterion: Orders each group's channels for the prefix widths (an
            `ekg_keras.criteria` name or callable).
        num_ratios: Width ratios per group (31, from `smallest_ratio` to
            1.0).
        smallest_ratio: The smallest width ratio (0.1).
        population: Genes per generation of a stage EA (128).
        iterations: Generations of a stage EA (10).
        manager_population: Genes per generation of the EA manager (128).
        manager_iterations: Generations of the EA manager (10).
        top_k: Parents kept by both EAs (default: half the population,
            k = 64); each generation breeds half the population by
            mutation and half by crossover (M = S = 64). The paper does
            not give k, M or S.
        mutation_probability: Chance to redraw each gene position (0.1).
        budget_units: The manager splits the budget in this many units.
        repair_rounds: Rounds of stage EAs with rescaled budgets that bring
            the assembled network within `tolerance` below the target.
        tolerance: How far below the target the result may end (0.01,
            one point of the FLOPs fraction).
        batch_size: Batch size of the search (batch statistics over it).
        parallel: Stage EAs concurrently ("auto": when the strategy has
            one replica; "threads") or one after the other ("sequential").
        seed: Seed of the widths sampled in training and of the EAs.
    """

    supernet_epochs: int = dataclasses.field(
        default=50, metadata={"setting": "search_epochs"}
    )
    learning_rate: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    decay_every: int = 10
    decay_rate: float = 0.1
    val_per_class: int = 200
    criterion: object = "l1"
    num_ratios: int = widths_lib.NUM_RATIOS
    smallest_ratio: float = widths_lib.SMALLEST_RATIO
    population: int = 128
    iterations: int = 10
    manager_population: int = 128
    manager_iterations: int = 10
    top_k: int = None
    mutation_probability: float = 0.1
    budget_units: int = 100
    repair_rounds: int = 2
    tolerance: float = 0.01
    batch_size: int = dataclasses.field(
        default=256, metadata={"setting": "eval_batch_size"}
    )
    parallel: str = "auto"
    seed: int = dataclasses.field(default=0, metadata={"setting": "seed"})

    def __post_init__(self):
        for name in (
            "supernet_epochs",
            "decay_every",
            "val_per_class",
            "budget_units",
            "batch_size",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < 1
            ):
                raise ValueError(
                    f"`{name}` should be a positive integer. Received: "
                    f"{name}={value!r}"
                )
        for name in ("learning_rate", "decay_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"`{name}` should be positive. Received: "
                    f"{name}={getattr(self, name)!r}"
                )
        if not 0 < self.tolerance < 1:
            raise ValueError(
                "`tolerance` should be in (0, 1). Received: "
                f"tolerance={self.tolerance!r}"
            )
        if self.parallel not in PARALLEL_MODES:
            raise ValueError(
                f"`parallel` should be one of {PARALLEL_MODES}. Received: "
                f"parallel={self.parallel!r}"
            )
        if self.repair_rounds < 0:
            raise ValueError(
                "`repair_rounds` should be >= 0. Received: "
                f"repair_rounds={self.repair_rounds!r}"
            )
        widths_lib.width_ratios(self.num_ratios, self.smallest_ratio)
        self.stage_settings()
        self.manager_settings()

    def stage_settings(self):
        """`EvolutionSettings` of a stage EA."""
        return EvolutionSettings(
            self.population,
            self.iterations,
            self.top_k,
            self.mutation_probability,
        )

    def manager_settings(self):
        """`EvolutionSettings` of the EA manager."""
        return EvolutionSettings(
            self.manager_population,
            self.manager_iterations,
            self.top_k,
            self.mutation_probability,
        )


#: Option sets by name (the trainers' `--preset`): "cpu" trains the
#: super-net 5 epochs and runs small evolutionary searches (minutes on the
#: digits on a CPU); "paper" keeps Sec. 4.1's settings (50 epochs, EAs of
#: 128 x 10).
OPTION_SETS = {
    "cpu": {
        "supernet_epochs": 5,
        "val_per_class": 30,
        "population": 16,
        "iterations": 4,
        "manager_population": 8,
        "manager_iterations": 3,
        "budget_units": 20,
    },
    "paper": {},
}
