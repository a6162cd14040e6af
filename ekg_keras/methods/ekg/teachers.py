"""Choosing the EKG teachers among the search's sub-networks (EKG Eq. 10).

The search leaves a trajectory of sub-networks theta_0 (unpruned) ...
theta_n = theta* (the result). K of the interim ones become teachers whose
logits fill the memory bank; their validation losses should be spread
evenly between the best and the worst, so the bank holds knowledge of
several difficulties.
"""

import numpy as np

VARIANTS = ("code", "poster")
#: Loss given to a chosen entry so that it is not chosen again.
_TAKEN = 1e6


def select_teachers(losses, num_teachers=5, variant="code"):
    """Indices of the teachers among the search history.

    `losses[i]` is the validation loss of sub-network theta_i; the last
    entry is the search result theta*, the student.

    * `variant="code"` (the reference): theta* is excluded; K targets
      `min + j * (max - min) / K` (j = 0..K-1) span the remaining losses,
      and each takes the closest entry not yet taken. Teacher 0 is the
      lowest-loss entry (usually theta_0), the "top" teacher of fine-tuning.
    * `variant="poster"` (Eq. 10): targets
      `((K-k)/K) L(theta*) + (k/K) L(theta_0)` for k = 1..K, each taking the
      closest entry not yet taken (theta* excluded too: the student does not
      teach itself); teacher 0 is then the lowest-loss one, as the
      fine-tuning expects.

    Edge cases: at most `min(K, entries)` distinct teachers are returned
    (the reference repeats entries when the history is short); equal
    losses (a zero spread) give the first entries in loss order instead of
    failing; ties break by position.

    Args:
        losses: Validation loss per history entry (at least 2 entries: one
            teacher besides the student).
        num_teachers: K.
        variant: "code" or "poster".

    Returns:
        A list of distinct history indices, lowest loss first.

    Raises:
        ValueError: For a bad `variant`, `num_teachers < 1` or fewer than two
            history entries.
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"`variant` should be one of {VARIANTS}. Received: "
            f"variant={variant!r}"
        )
    if int(num_teachers) < 1:
        raise ValueError(
            "`num_teachers` should be at least 1. Received: "
            f"num_teachers={num_teachers!r}"
        )
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or len(losses) < 2:
        raise ValueError(
            "Teachers are chosen from a search history of at least two "
            "sub-networks (the unpruned one and the result). Received "
            f"{losses.size} losses."
        )
    candidates = np.arange(len(losses) - 1)  # theta* is the student.
    count = min(int(num_teachers), len(candidates))
    if variant == "code":
        low, high = losses[candidates].min(), losses[candidates].max()
        targets = low + np.arange(count) * (high - low) / count
    else:
        k = np.arange(1, count + 1)
        targets = ((count - k) * losses[-1] + k * losses[0]) / count
    # The reference's tie-break: a tiny increasing offset per entry.
    available = losses[candidates] + np.arange(len(candidates)) * 1e-12
    chosen = []
    for target in targets:
        j = int(np.argmin(np.abs(target - available)))
        chosen.append(int(candidates[j]))
        available[j] = _TAKEN
    return sorted(chosen, key=lambda i: (losses[i], i))
