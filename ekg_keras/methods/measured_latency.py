"""Holding a method's result to its latency budget by measurement.

The latency model predicts; the device decides. A method's allocation
minimises the *predicted* time, so it tends to land where the model
under-predicts (on x86, widths that do not fill SIMD vectors run on
slower kernels than the table's grid points suggest). After a method
prunes under a latency budget, the pruned network and the original are
timed against each other; while the measured fraction is above the
budget, a method that needs no data prunes again to a lowered predicted
budget: scaled by the measured error at first, then by the secant between
the closest pruning above the budget and the best one within it, so the
result keeps as much of the budget as the device allows.

The floor network (every group at its floor width) bounds what a lowered
budget may ask for by measurement, not prediction: a step below the
predicted floor prunes to the floor, and only the floor measured above
the budget stops the search. When the set-up timed the floor already (a
budget below the predicted floor, `ekg_keras.latency.reachability`),
that measurement is the first pruning within the budget.
"""

import warnings

from ekg_keras import _logging as log
from ekg_keras._warnings import user_stacklevel

# Secant steps smaller than this (in predicted fraction) stop the search.
_RESOLUTION = 0.005


def meet_measured_latency(method, masked, fitter):
    """Times `method`'s pruned network and prunes again while it misses.

    Args:
        method: A `PruningMethod` that has just run `search` under a
            latency budget (`method.setup.budget == "latency"`).
        masked: The masked model its search returned.
        fitter: The fitter its search was given.

    Returns:
        The masked model of the pruning kept: the one with the largest
        predicted budget whose measured fraction is within the user's
        budget, or the last one if none is (with a warning).
    """
    goal = method.scope.latency
    attempts = method.setup.counter.attempts
    within, above = None, None  # (predicted budget, predicted, measured)
    floor = method.setup.smallest_fraction()
    timing = method.setup.floor_timing
    if timing is not None and timing.reaches(goal) and not method.needs_data:
        # The floor is a pruning within the goal to go back to (not for a
        # method that learns from data: it is not run again).
        within = (floor, timing.predicted, timing.measured)
    reason = None
    for attempt in range(1, attempts + 1):
        budget = method.setup.target
        predicted, measured = _measure(method, goal)
        if measured <= goal:
            if within is None or predicted > within[1]:
                within = (budget, predicted, measured)
        elif above is None or predicted < above[1]:
            above = (budget, predicted, measured)
        if above is None:
            return masked  # Met at the first measurement.
        reason = _why_not_again(method, attempt, attempts)
        lowered = None if reason else _next_budget(goal, within, above)
        if lowered is not None and lowered < floor:
            if above[0] <= floor:
                reason = (
                    f"every group at its floor width measured {above[2]:.1%}"
                )
                break
            lowered = floor  # The floor decides, by its measurement.
        if lowered is None:
            reason = reason or "converged"
            break
        if method.verbose:
            log.info(
                f"ekg_keras: {method.name} prunes again to a predicted "
                f"{lowered:.1%} of the latency"
            )
        masked = _prune_again(method, lowered, fitter)
    if within is None:
        warnings.warn(
            f"ekg_keras: {method.name} keeps {method.measured_latency:.1%} "
            f"of the measured latency, above the budget {goal:.1%} "
            f"({reason}); the latency model predicted {above[1]:.1%}. Ask "
            "for a lower `latency`, or round widths to the device's SIMD "
            "width (`round_to`).",
            stacklevel=user_stacklevel(),
        )
        return masked
    if method.measured_latency > goal:
        # The last attempt missed: go back to the best one within.
        masked = _prune_again(method, within[0], fitter)
        method.measured_latency = within[2]
    return masked


def _measure(method, goal):
    setup = method.setup
    counts = setup.keep_counts(setup.current_keep())
    predicted = setup.fraction(counts)
    measured = setup.counter.measured_fraction(counts)
    method.measured_latency = measured
    if method.verbose:
        log.info(
            f"ekg_keras: {method.name} measured {measured:.1%} of the "
            f"latency (predicted {predicted:.1%}; budget {goal:.1%})"
        )
    return predicted, measured


def _why_not_again(method, attempt, attempts):
    """Why the method is not pruned again, or None."""
    if attempt == attempts:
        return f"after {attempts} measured attempt(s)"
    if method.needs_data:
        return f"method {method.name!r} learns from data and is not run again"
    return None


def _next_budget(goal, within, above):
    """The next predicted budget: `above` scaled by its measured error
    while no pruning is within the goal, then the secant between the two;
    None when the step would be below the resolution."""
    _, p_above, m_above = above
    if within is None:
        return p_above * goal / m_above
    _, p_within, m_within = within
    if m_above <= m_within:
        return None  # Timing noise: no slope to follow.
    slope = (p_above - p_within) / (m_above - m_within)
    step = p_within + (goal - m_within) * slope
    step = min(step, p_above - _RESOLUTION)
    if step - p_within < _RESOLUTION:
        return None
    return step


def _prune_again(method, budget, fitter):
    timing = method.setup.floor_timing
    method.setup = method.set_up(
        method.setup.source, method.scope.with_fraction(budget)
    )
    method.setup.floor_timing = method.setup.floor_timing or timing
    return method.search(fitter)
