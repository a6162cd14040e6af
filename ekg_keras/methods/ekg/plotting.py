"""Plots of an EKG search (matplotlib, an optional dependency)."""

from ekg_keras._matplotlib import pyplot


def plot_search(search, path=None):
    """Draws an EKG search: its trajectory and the widths it chose.

    Left: validation loss (and accuracy) against the FLOPs fraction along
    the search, from the unpruned network to the result. Right: the
    channels each group kept in the result, beside its full size.

    Args:
        search: An `ekg_keras.EKGSearch` after `run()`.
        path: Optional file to save the figure to (e.g. "search.png").

    Returns:
        The matplotlib `Figure`.

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If the search has not run.
    """
    if not search.history:
        raise ValueError("The search has no history yet: call `run()` first.")
    plt = pyplot()
    history = search.history
    figure, (trajectory, widths) = plt.subplots(1, 2, figsize=(12, 4.5))
    fractions = [step.flops_fraction for step in history]
    trajectory.plot(
        fractions,
        [step.loss for step in history],
        "o-",
        markersize=3,
        label="validation loss",
    )
    trajectory.axvline(
        search.target,
        color="gray",
        linestyle=":",
        label=f"target {search.target}",
    )
    trajectory.invert_xaxis()
    trajectory.set_xlabel("FLOPs fraction kept")
    trajectory.set_ylabel("validation loss")
    accuracy = trajectory.twinx()
    accuracy.plot(
        fractions,
        [step.accuracy for step in history],
        "s--",
        color="tab:green",
        markersize=3,
        label="accuracy",
    )
    accuracy.set_ylabel("validation accuracy")
    trajectory.legend(loc="upper left")
    trajectory.set_title("EKG search trajectory")
    groups = [g for g in search.graph.groups if g.prunable]
    positions = range(len(groups))
    kept = [history[-1].keep_counts[g.id] for g in groups]
    widths.bar(
        positions, [g.size for g in groups], color="lightgray", label="full"
    )
    widths.bar(positions, kept, color="tab:blue", label="kept")
    widths.set_xticks(list(positions))
    widths.set_xticklabels(
        [
            g.producers[0] + (" +" if len(g.producers) > 1 else "")
            for g in groups
        ],
        rotation=90,
        fontsize=6,
    )
    widths.set_ylabel("channels")
    widths.legend()
    widths.set_title("Kept channels per group")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
