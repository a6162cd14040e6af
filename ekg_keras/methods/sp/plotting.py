"""Plots of an SP run (matplotlib, an optional dependency)."""

import numpy as np

from ekg_keras._matplotlib import pyplot


def plot_sp(method, path=None):
    """Draws an SP run: the manager's search and the widths it chose.

    Left: the best manager gene's budget per stage (fraction of the
    unpruned FLOPs) at each manager generation. Middle: each stage's best
    distillation loss at each manager generation, and (dotted, against the
    top axis) the stage EA curves of the chosen sub-network. Right: the
    kept fraction of every prunable group, coloured by stage.

    Args:
        method: A `StagewisePruning` after `run()`.
        path: Optional file to save the figure to.

    Returns:
        The matplotlib `Figure`.

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If the method has not finished a run.
    """
    if not method.history or method.result is None:
        raise ValueError(
            "SP has no finished search to plot: call `run()` first."
        )
    plt = pyplot()
    from matplotlib import ticker

    history, result = method.history, method.result
    figure, (budgets, losses, kept) = plt.subplots(1, 3, figsize=(15, 4.5))
    generations = [h.generation for h in history]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    stages = method.supernet.stages
    for axis, field in ((budgets, "budgets"), (losses, "stage_losses")):
        for i in range(len(stages)):
            axis.plot(
                generations,
                [getattr(h, field)[i] for h in history],
                "o-",
                color=colors[i % len(colors)],
                label=f"stage {i}",
            )
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    budgets.set_xlabel("manager generation")
    budgets.set_ylabel("stage budget (fraction of FLOPs)")
    budgets.set_title(f"EA manager (target {method.target})")
    budgets.legend()
    losses.set_xlabel("manager generation")
    losses.set_ylabel("best stage loss")
    losses.set_yscale("log")
    losses.set_title("Stage losses")
    curves = losses.twiny()
    for i, curve in enumerate(result.stage_curves):
        curves.plot(
            np.arange(1, len(curve) + 1),
            curve,
            ":",
            color=colors[i % len(colors)],
        )
    curves.set_xlabel("stage EA generation (chosen budgets, dotted)")
    curves.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    sizes = method.graph.sizes
    for stage in stages:
        groups = list(stage.groups)
        kept.bar(
            groups,
            [result.keep_counts[g] / sizes[g] for g in groups],
            color=colors[stage.index % len(colors)],
            label=f"stage {stage.index}",
        )
    kept.set_ylim(0, 1.05)
    kept.set_xlabel("channel group")
    kept.set_ylabel("kept fraction")
    kept.set_title(f"Chosen widths: {result.flops_fraction:.1%} of the FLOPs")
    kept.legend()
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
