"""The sub-networks a method passed through, as data any fine-tuner reads."""

import dataclasses
import os

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Trajectory:
    """Sub-networks of one model, in the order a method visited them.

    EKG's distillation fine-tuning takes its teachers from here (the bank is
    built from a trajectory and the model, not from a search object), so
    any method that leaves intermediate sub-networks can offer it.

    Attributes:
        keep_masks: One entry per sub-network: a list with one boolean keep
            mask per channel group. The last entry is the method's result.
        losses: Validation loss of each sub-network (lower is better).
        flops_fractions: FLOPs kept by each sub-network.
    """

    keep_masks: list
    losses: np.ndarray
    flops_fractions: np.ndarray

    def __post_init__(self):
        lengths = {len(self.keep_masks), len(self.losses)}
        lengths.add(len(self.flops_fractions))
        if len(lengths) != 1:
            raise ValueError(
                "A trajectory needs one loss and one FLOPs fraction per "
                f"sub-network. Received: {len(self.keep_masks)} sub-networks, "
                f"{len(self.losses)} losses, {len(self.flops_fractions)} "
                "fractions."
            )

    def __len__(self):
        return len(self.keep_masks)

    def save(self, path):
        """Writes the trajectory to `path` (a `.npz` file), atomically."""
        arrays = {
            "losses": np.asarray(self.losses, np.float64),
            "flops_fractions": np.asarray(self.flops_fractions, np.float64),
            "groups": np.array(len(self.keep_masks[0]) if self else 0),
        }
        for i, keep in enumerate(self.keep_masks):
            for g, mask in enumerate(keep):
                arrays[f"keep_{i}_{g}"] = np.packbits(np.asarray(mask, bool))
                arrays[f"size_{i}_{g}"] = np.array(len(mask))
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp")
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path):
        """Reads a trajectory that `save` wrote.

        Raises:
            FileNotFoundError: If `path` does not exist.
        """
        with np.load(path) as arrays:
            losses = arrays["losses"]
            groups = int(arrays["groups"])
            keep_masks = [
                [
                    np.unpackbits(
                        arrays[f"keep_{i}_{g}"],
                        count=int(arrays[f"size_{i}_{g}"]),
                    ).astype(bool)
                    for g in range(groups)
                ]
                for i in range(len(losses))
            ]
            return cls(keep_masks, losses, arrays["flops_fractions"])
