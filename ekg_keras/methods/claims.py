"""Claims of the methods' papers that a comparison can check.

A method package registers the qualitative claims of its paper that a
small comparison can test (e.g. "ASFP >= SFP at the same budget") with
`register_claim`; `benchmarks/compare.py` measures each one over seeds
without knowing the methods. A measure is "pruned" (test accuracy right
after pruning, batch norm recalibrated), "final" (after the method's
whole training budget, with its default fine-tuner) or a fine-tuner's
name ("plain", "ekg": after the budget with that fine-tuner).
"""

import dataclasses

_CLAIMS = {}


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim: `method`'s `measure` >= `reference`'s `reference_measure`.

    Attributes:
        name: A short identifier.
        text: The claim in words, as a reader sees it.
        method: A registered method name.
        reference: The registered method it is compared with (may be
            `method` itself, comparing two measures of it).
        source: Where the paper makes it (section, table).
        measure: What is compared of `method`.
        reference_measure: What is compared of `reference` (default:
            `measure`).
    """

    name: str
    text: str
    method: str
    reference: str
    source: str
    measure: str = "final"
    reference_measure: str = None

    def __post_init__(self):
        if self.reference_measure is None:
            object.__setattr__(self, "reference_measure", self.measure)


def register_claim(claim):
    """Registers `claim` under its name (a later one replaces it)."""
    if not isinstance(claim, Claim):
        raise ValueError(
            f"register_claim expects a Claim. Received: {type(claim)!r}"
        )
    _CLAIMS[claim.name] = claim
    return claim


def claims():
    """Every registered `Claim`, in registration order."""
    return tuple(_CLAIMS.values())
