"""The knobs of LFPC (defaults: the thesis' CIFAR setting)."""

import dataclasses

from ekg_keras.methods.lfpc.criteria import DEFAULT_CRITERIA
from ekg_keras.methods.lfpc.criteria import check_criteria
from ekg_keras.methods.lfpc.structure import COUNT_MODES
from ekg_keras.methods.lfpc.widths import TAS_WIDTHS
from ekg_keras.methods.lfpc.widths import check_widths


@dataclasses.dataclass(frozen=True)
class LFPCOptions:
    """Options of LFPC (defaults: the thesis' CIFAR setting, Sec. 6.4.1).

    Attributes:
        criteria: Candidate criteria, names from `ekg_keras.criteria`
            (weight-based); a string "l1/l2/fpgm" works too. The thesis'
            ablation adds the adversarial "adv_l1" and "adv_l2"
            (`1/||W||_p`, registered by this package).
        widths: Candidate keep counts per group, as fractions of its
            channels (TAS's 0.3, 0.4, ..., 1.0; "0.5/0.75/1" as text), or
            None / "all" for every count the group may keep.
        search_epochs: Epochs of the sampler's training (600 on CIFAR in
            the thesis, 35 on ImageNet; the trainers' `--search_epochs`).
        batch_size: Its batch size (256).
        learning_rate: Adam's constant learning rate (1e-3).
        weight_decay: Adam's weight decay (1e-3; Keras' decoupled form).
        tau_start, tau_end: The Gumbel-softmax temperature falls linearly
            from 5 to 0.1.
        lambda_comp: Weight of the computation loss (2).
        val_fraction: The random share of the training data the sampler
            trains on (its validation split, Eq. 6.13: half).
        counts: The widths to prune with: "argmax" (most probable keep
            count per group) or "expected"; either is then scaled to meet
            `flops` within half a point below it.
        batch_statistics: Run the network with batch statistics during the
            search (the moving averages stay as they are).
        shuffle_buffer: Shuffle buffer (samples) when `data` is a dataset.
        trajectory_steps: Sub-networks on the path from the unpruned
            network to the result that `trajectory()` offers EKG's
            distillation fine-tuning.
        trajectory_samples: Validation samples that score them.
        seed: Seed of the split, the order and the Gumbel noise.

    The thesis leaves the computation loss and the per-layer rate sampler
    to its unavailable supplement (Eq. 6.14, Sec. 6.4.1); both are chosen
    here after TAS (Dong and Yang, NeurIPS 2019), which the thesis cites
    for the rates: TAS-style count logits and expected FLOPs, see
    `CriteriaSampler` and `computation_loss`.
    """

    criteria: tuple = DEFAULT_CRITERIA
    widths: tuple = TAS_WIDTHS
    search_epochs: int = dataclasses.field(
        default=600, metadata={"setting": "search_epochs"}
    )
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    tau_start: float = 5.0
    tau_end: float = 0.1
    lambda_comp: float = 2.0
    val_fraction: float = 0.5
    counts: str = "argmax"
    batch_statistics: bool = True
    shuffle_buffer: int = 10_000
    trajectory_steps: int = 8
    trajectory_samples: int = 512
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "criteria", check_criteria(self.criteria))
        object.__setattr__(self, "widths", check_widths(self.widths))
        for name in (
            "search_epochs",
            "batch_size",
            "shuffle_buffer",
            "trajectory_steps",
            "trajectory_samples",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(
                    f"`{name}` should be a positive integer. Received: "
                    f"{name}={value!r}"
                )
        for name in ("learning_rate", "tau_start", "tau_end"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"`{name}` should be positive. Received: "
                    f"{name}={getattr(self, name)!r}"
                )
        for name in ("weight_decay", "lambda_comp"):
            if not getattr(self, name) >= 0:
                raise ValueError(
                    f"`{name}` should be >= 0. Received: "
                    f"{name}={getattr(self, name)!r}"
                )
        if not 0 < self.val_fraction <= 1:
            raise ValueError(
                "`val_fraction` should be in (0, 1]. Received: "
                f"val_fraction={self.val_fraction!r}"
            )
        if self.counts not in COUNT_MODES:
            raise ValueError(
                f"`counts` should be one of {COUNT_MODES}. Received: "
                f"counts={self.counts!r}"
            )


#: Option sets by name (the trainers' `--preset`): "cpu" trains the sampler
#: 10 epochs at a learning rate that moves it in so few (a few minutes on
#: the digits on a CPU; the thesis' 600 epochs at 1e-3 take a GPU);
#: "paper" keeps the thesis' CIFAR setting.
OPTION_SETS = {
    "cpu": {"search_epochs": 10, "batch_size": 128, "learning_rate": 0.1},
    "paper": {},
}
