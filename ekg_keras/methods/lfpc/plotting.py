"""Plots of an LFPC search (matplotlib, an optional dependency)."""

import numpy as np

from ekg_keras._matplotlib import pyplot
from ekg_keras.methods.lfpc.history import group_label


def plot_criteria(method, path=None):
    """Draws which criterion each group chose and how the choice evolved.

    Left (the thesis' Fig. 6.4): one bar per prunable group, from the
    input side to the output side: its full width in gray and the channels
    it kept in the colour of its learned criterion. Right (Fig. 6.6): per
    criterion, how many groups find it the most probable, epoch by epoch.

    Args:
        method: An LFPC method after `run()`.
        path: Optional file to save the figure to (e.g. "criteria.png").

    Returns:
        The matplotlib `Figure`.

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If the method has not searched yet.
    """
    structure = method.structure
    if structure is None or not method.history:
        raise ValueError(
            "The LFPC method has no search to plot yet: call `run()` first "
            "(with flops < 1)."
        )
    plt = pyplot()
    from matplotlib.patches import Patch

    names = list(method.options.criteria)
    colours = {
        name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)
    }
    figure, (bars, evolution) = plt.subplots(1, 2, figsize=(13, 4.5))
    groups = [method.setup.graph.groups[g] for g in structure.group_ids]
    positions = np.arange(len(groups))
    bars.bar(positions, [g.size for g in groups], color="lightgray")
    bars.bar(
        positions,
        [structure.keep_counts[g.id] for g in groups],
        color=[colours[name] for name in structure.criteria],
    )
    legend = [Patch(color=colours[name], label=name) for name in names]
    legend.append(Patch(color="lightgray", label="pruned"))
    bars.set_xticks(list(positions))
    bars.set_xticklabels(
        [group_label(g) for g in groups], rotation=90, fontsize=6
    )
    bars.set_ylabel("channels")
    bars.legend(handles=legend, fontsize=8)
    bars.set_title(
        f"Learned criterion and kept channels per group "
        f"({structure.flops_fraction:.1%} of the FLOPs)"
    )
    epochs = [record.epoch + 1 for record in method.history]
    for name in names:
        counts = [record.chosen.count(name) for record in method.history]
        evolution.plot(epochs, counts, color=colours[name], label=name)
    evolution.set_xlabel("sampler epoch")
    evolution.set_ylabel("groups choosing it")
    evolution.legend(fontsize=8)
    evolution.set_title("Most probable criterion during the search")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
