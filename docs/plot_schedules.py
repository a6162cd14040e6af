"""Plots the SFP and ASFP pruning-rate schedules to `asfp_schedule.png`.

Run from the repository root:

    python docs/plot_schedules.py
"""

import pathlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from ekg_keras.methods.soft.schedules import AsymptoticRate
from ekg_keras.methods.soft.schedules import ConstantRate

GOAL = 0.3
EPOCHS = 200
OUTPUT = pathlib.Path(__file__).with_name("asfp_schedule.png")


def main():
    """Draws the three schedules and their defining points."""
    epochs = np.linspace(0, EPOCHS, 801)
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)

    constant = ConstantRate(GOAL)
    axes.plot(
        epochs,
        [constant(e) for e in epochs],
        color="tab:gray",
        linestyle="--",
        label=f"SFP: ConstantRate({GOAL})",
    )
    for d, color in ((1 / 8, "tab:blue"), (1 / 16, "tab:orange")):
        schedule = AsymptoticRate(GOAL, EPOCHS, d=d)
        axes.plot(
            epochs,
            [schedule(e) for e in epochs],
            color=color,
            label=f"ASFP: AsymptoticRate({GOAL}, {EPOCHS}, d=1/{round(1 / d)})",
        )
        points = [
            (0, schedule.min_rate),
            (EPOCHS * d, 0.75 * GOAL),
            (EPOCHS, GOAL),
        ]
        axes.plot(*zip(*points), "o", color=color, markersize=6)
        axes.annotate(
            f"(E·D, 0.75·goal) = ({EPOCHS * d:g}, {0.75 * GOAL:g})",
            points[1],
            xytext=(45, 0.2 if d == 1 / 8 else 0.16),
            color=color,
            arrowprops={"arrowstyle": "->", "color": color},
        )

    axes.set_xlim(-3, EPOCHS + 3)
    axes.set_ylim(-0.01, GOAL * 1.12)
    axes.set_xlabel("epoch e (completed epochs)")
    axes.set_ylabel("pruning rate P'(e)")
    axes.set_title(
        "Pruning-rate schedules: P'(e) = a·exp(-k·e) + b through "
        "(0, Pmin), (E·D, 0.75·Pg), (E, Pg)",
        fontsize=10,
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(OUTPUT)
    plt.close(figure)


if __name__ == "__main__":
    main()
