"""The knobs of the EKG search (defaults as in the EKG reference code)."""

import dataclasses

from ekg_keras.evaluation import LAYOUTS
from ekg_keras.evaluation import PRECISIONS

VARIANTS = ("code", "poster")


@dataclasses.dataclass(frozen=True)
class EKGOptions:
    """Options of the EKG search (defaults as in the EKG reference code).

    Attributes:
        val_data: Optional labelled data used whole as the validation
            subset instead of drawing it from `data`.
        finetune: Fine-tune one epoch on the per-class subset first (EKG
            Alg. 1, line 1).
        search_step: Base width step (0.2).
        val_per_class: Validation samples per class (32).
        subset_per_class: Fine-tuning samples per class (256).
        batch_size: Batch size of scoring and evaluation (256).
        variant: "code" (Otsu-filtered candidates, the reference code) or
            "poster" (a candidate in every group).
        rescale_kernels: Rescale masked kernels to keep their Frobenius
            norm, as the reference code's masked layers do; `slim` keeps
            it.
        batch_statistics: Evaluate with batch statistics (the reference)
            or with the moving averages.
        cache: Evaluate candidates from cached activations (fast) or run
            the whole network per candidate (plain, like the reference).
        seed: Seed of the subset shuffles (the reference fixes 1).
        jit_compile: XLA-compile the evaluator's pieces (a bool, or a dict
            with "importance" and "candidates"); see `SubnetworkEvaluator`.
            Off: on this project's 2-core CPU XLA was about 2x slower.
        layout: "sequential" (one compiled call per candidate and batch)
            or "stacked" (all of a step's candidates in one call per batch:
            a handful of large kernels per step, meant for accelerators);
            both choose the same sub-network (see `SubnetworkEvaluator`).
            On this project's 2-core CPU, whole idle searches scored
            candidates faster sequentially: ResNet-20 24 s vs 26 s,
            ResNet-56 199 s vs 241 s.
        precision: "float32", or "mixed_float16" / "mixed_bfloat16" to
            score and rank in 16-bit compute (variables stay float32; the
            subset fine-tune stays float32). For GPUs; on a CPU without
            16-bit kernels it is slower. Scores change at 16-bit rounding,
            so the chosen sub-network may differ from float32's.
    """

    val_data: object = None
    finetune: bool = True
    search_step: float = 0.2
    val_per_class: int = 32
    subset_per_class: int = 256
    batch_size: int = dataclasses.field(
        default=256, metadata={"setting": "eval_batch_size"}
    )
    variant: str = "code"
    rescale_kernels: bool = False
    batch_statistics: bool = True
    cache: bool = True
    seed: int = 1
    jit_compile: bool = False
    layout: str = "sequential"
    precision: str = "float32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"`precision` should be one of {PRECISIONS}. Received: "
                f"precision={self.precision!r}"
            )
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"`layout` should be one of {LAYOUTS}. Received: "
                f"layout={self.layout!r}"
            )
        if self.variant not in VARIANTS:
            raise ValueError(
                f"`variant` should be one of {VARIANTS}. Received: "
                f"variant={self.variant!r}"
            )
        if not 0 < self.search_step <= 1:
            raise ValueError(
                "`search_step` should be in (0, 1]. Received: "
                f"search_step={self.search_step!r}"
            )
        for name in ("val_per_class", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) < 1:
                raise ValueError(
                    f"`{name}` should be a positive integer. Received: "
                    f"{name}={value!r}"
                )


#: Option sets by name (the trainers' `--preset`): "cpu" scores on fewer
#: validation samples and fine-tunes one epoch on a smaller subset
#: (minutes for a ResNet-20 on the digits on a CPU); "paper" keeps the
#: reference code's defaults.
OPTION_SETS = {
    "cpu": {"val_per_class": 16, "subset_per_class": 64},
    "paper": {},
}
