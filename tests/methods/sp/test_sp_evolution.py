"""SP's evolutionary search: constrained genes, the EA manager, resume."""

import numpy as np
import pytest

from ekg_keras.methods.sp import EvolutionSettings
from ekg_keras.methods.sp.evolution import BudgetGenes
from ekg_keras.methods.sp.evolution import Evolution
from ekg_keras.methods.sp.evolution import StageGenes
from ekg_keras.methods.sp.manager import BudgetManager
from ekg_keras.methods.sp.manager import StageSearches

SIZES = np.array([31, 31, 16, 8])


def _costs(genes):
    """A coupled cost: consecutive positions multiply, like conv layers."""
    counts = np.atleast_2d(genes) + 1.0
    return counts[:, :-1] @ np.ones(3) + counts[:, 0] * counts[:, 1] * 2


def _distance(genes, target=(20, 5, 9, 3)):
    return np.abs(np.asarray(genes) - np.array(target)).sum(axis=1) * 0.1


def test_stage_genes_always_fit_their_budget():
    space = StageGenes(SIZES, _costs, budget=400, lowest=300)
    rng = np.random.default_rng(0)
    parents = space.random(rng, 64)[:8]
    for genes in (
        space.random(rng, 256),
        space.mutate(rng, parents, 256, 0.1),
        space.crossover(rng, parents, 256),
    ):
        assert len(genes)
        costs = _costs(genes)
        assert np.all((costs >= 300) & (costs <= 400))
        assert np.all((genes >= 0) & (genes < SIZES))
    # A budget only the smallest genes meet: capped proposals find them.
    tight = StageGenes(SIZES, _costs, budget=_costs(np.zeros(4))[0] + 3)
    assert np.all(_costs(tight.random(rng, 64)) <= tight.budget)
    assert len(tight.random(rng, 64))


def test_budget_genes_sum_to_the_total_within_their_bounds():
    space = BudgetGenes(lower=[3, 10, 1], upper=[40, 60, 5], total=50)
    rng = np.random.default_rng(1)
    parents = space.random(rng, 16)
    for genes in (
        parents,
        space.mutate(rng, parents, 64, 0.5),
        space.crossover(rng, parents, 64),
    ):
        assert np.all(genes.sum(axis=1) == 50)
        assert np.all((genes >= [3, 10, 1]) & (genes <= [40, 60, 5]))
    with pytest.raises(ValueError, match="No stage budgets fit"):
        BudgetGenes(lower=[30, 30], upper=[40, 40], total=50)


def test_evolution_improves_and_resumes_identically():
    settings = EvolutionSettings(population=32, iterations=6)
    space = StageGenes(SIZES, _costs, budget=600)
    straight = Evolution(space, settings, (7,))
    gene, score = straight.run(_distance)
    curve = straight.best_per_generation
    assert curve == sorted(curve, reverse=True) and curve[-1] < curve[0]
    assert score == min(straight.scores.values())
    assert len(straight.scores) <= 32 * 6
    # Every gene scored was new and met the budget.
    assert np.all(_costs(np.array(list(straight.scores))) <= 600)
    interrupted = Evolution(space, settings, (7,))
    for _ in range(2):
        interrupted.step(_distance)
    resumed = Evolution(space, settings, (7,))
    resumed.restore(interrupted.state())
    assert resumed.run(_distance) == (gene, score)
    assert Evolution(space, settings, (8,)).run(_distance) != (gene, score)


class _FakeStage:
    """The `StageFitness` interface over a toy cost and loss."""

    def __init__(self, scale):
        self.scale = scale
        self.table_sizes = SIZES
        self.num_genes = len(SIZES)
        self.calls = 0

    def costs(self, genes):
        return self.scale * _costs(genes)

    def cost_range(self):
        return (
            float(self.costs(np.zeros(4, int))[0]),
            float(self.costs(SIZES - 1)[0]),
        )

    def losses(self, genes):
        self.calls += 1
        genes = np.asarray(genes)
        return self.scale / (1 + genes.sum(axis=1))


@pytest.mark.parametrize("parallel", ["sequential", "threads"])
def test_manager_budgets_sum_to_the_total(parallel):
    stages = [_FakeStage(1.0), _FakeStage(3.0)]
    settings = EvolutionSettings(population=8, iterations=2)
    searches = StageSearches(
        stages, settings, seed=0, window=0.05, parallel=parallel
    )
    assert searches.concurrent == (parallel == "threads")
    full = sum(s.cost_range()[1] for s in stages)
    manager = BudgetManager(searches, 0.5 * full, 40, settings, seed=0)
    while not manager.done:
        gene, _ = manager.step()
        assert sum(gene) == 40
        assert sum(manager.budgets(gene)) == pytest.approx(0.5 * full)
    for result in searches.results.values():
        cost = stages[result.stage].costs(np.array([result.gene]))[0]
        assert cost <= result.budget
    results = manager.stage_results(manager.evolution.best[0])
    assert manager.evolution.best[1] == pytest.approx(
        sum(r.loss for r in results)
    )
