"""The evolutionary search of SP (Sec. 3.3, Alg. 3), for any gene space.

Each generation scores its population, keeps the `top_k` best genes seen so
far, and breeds the next population from them: `population // 2` mutants
(each position redrawn with `mutation_probability`) and `population // 2`
crossovers (each position from either of two parents), any shortfall
filled with random genes. As in the single-path one-shot code SP builds on,
a gene scored once is never proposed again, and every proposal must
satisfy the space's constraint (rejection sampling). The random numbers of
generation `t` come from `seed + (t,)`, so a search resumed from its state
draws what an uninterrupted one would.
"""

import dataclasses

import numpy as np

from ekg_keras import ties

#: Proposals drawn per batch, as a multiple of the genes wanted.
OVERSAMPLE = 4
#: Batches of proposals tried before giving up on more genes.
MAX_BATCHES = 64


@dataclasses.dataclass(frozen=True)
class EvolutionSettings:
    """Size of an evolutionary search.

    Attributes:
        population: Genes scored per generation (128).
        iterations: Generations (10).
        top_k: Parents kept (default `population // 2`, 64 for 128; the SP
            paper does not give k).
        mutation_probability: Chance to redraw each position (0.1).
    """

    population: int = 128
    iterations: int = 10
    top_k: int = None
    mutation_probability: float = 0.1

    def __post_init__(self):
        for name in ("population", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) < 1:
                raise ValueError(
                    f"`{name}` should be a positive integer. Received: "
                    f"{name}={value!r}"
                )
        if self.top_k is not None and not 1 <= self.top_k:
            raise ValueError(
                f"`top_k` should be >= 1. Received: top_k={self.top_k!r}"
            )
        if not 0 <= self.mutation_probability <= 1:
            raise ValueError(
                "`mutation_probability` should be in [0, 1]. Received: "
                f"mutation_probability={self.mutation_probability!r}"
            )

    @property
    def parents(self):
        """k: the number of genes kept to breed from."""
        return self.top_k or max(1, self.population // 2)


class Evolution:
    """An evolutionary search over a gene space, one generation at a time.

    Args:
        space: Proposes genes: `random(rng, count)`, `mutate(rng, parents,
            count, probability)` and `crossover(rng, parents, count)`, each
            returning an (n, positions) int array of genes that satisfy its
            constraint.
        settings: `EvolutionSettings`.
        seed: A tuple of ints seeding the generations.

    Attributes:
        scores: Dict gene (tuple) -> score of every gene scored.
        population: The genes the next generation scores.
        generation: Generations done.
        best_per_generation: Best score seen after each generation.
    """

    def __init__(self, space, settings, seed):
        self.space = space
        self.settings = settings
        self.seed = tuple(int(s) for s in seed)
        self.scores = {}
        self.generation = 0
        self.best_per_generation = []
        self.population = self._fresh(self._rng(), [], settings.population)

    @property
    def done(self):
        """Whether every generation ran (or no new gene can be proposed)."""
        return (
            self.generation >= self.settings.iterations or not self.population
        )

    @property
    def best(self):
        """`(gene, score)` of the best gene scored, or None."""
        if not self.scores:
            return None
        gene = self._ranked()[0]
        return gene, self.scores[gene]

    def step(self, score):
        """Scores the population with `score(genes) -> scores`, then breeds
        the next one.

        Returns:
            The generation's `(gene, score)` best so far.
        """
        genes = list(self.population)
        for gene, value in zip(genes, score(genes)):
            self.scores[gene] = float(value)
        self.generation += 1
        best = self.best
        self.best_per_generation.append(best[1])
        if self.generation < self.settings.iterations:
            self.population = self._breed()
        else:
            self.population = []
        return best

    def run(self, score):
        """Runs the remaining generations; returns `(gene, score)`."""
        while not self.done:
            self.step(score)
        return self.best

    def state(self):
        """A JSON-ready record of the search, for `restore`."""
        return {
            "generation": self.generation,
            "population": [list(g) for g in self.population],
            "scores": [[list(g), s] for g, s in self.scores.items()],
            "best_per_generation": list(self.best_per_generation),
        }

    def restore(self, state):
        """Continues from a `state()` record."""
        self.generation = int(state["generation"])
        self.population = [tuple(g) for g in state["population"]]
        self.scores = {tuple(g): float(s) for g, s in state["scores"]}
        self.best_per_generation = list(state["best_per_generation"])

    def _ranked(self):
        """Genes scored so far, best (lowest score) first; scores within
        `ties.DECISION_RTOL` count as tied and go in gene order."""
        genes = sorted(self.scores)
        order = ties.order(
            [self.scores[g] for g in genes], ties.DECISION_RTOL
        )
        return [genes[i] for i in order]

    def _rng(self):
        return np.random.default_rng([*self.seed, self.generation])

    def _breed(self):
        rng = self._rng()
        ranked = self._ranked()
        parents = np.array(ranked[: self.settings.parents], dtype=np.int64)
        half = self.settings.population // 2
        taken = []
        for propose, count in (
            (
                lambda n: self.space.mutate(
                    rng, parents, n, self.settings.mutation_probability
                ),
                half,
            ),
            (
                lambda n: self.space.crossover(rng, parents, n),
                self.settings.population - half,
            ),
        ):
            taken += new_genes(propose, count, self._known(taken))
        return taken + self._fresh(
            rng, taken, self.settings.population - len(taken)
        )

    def _fresh(self, rng, taken, count):
        return new_genes(
            lambda n: self.space.random(rng, n), count, self._known(taken)
        )

    def _known(self, taken):
        return set(self.scores) | set(taken)


def new_genes(propose, count, known):
    """Up to `count` distinct genes from `propose(n)` batches that are not
    in `known` (rejection: a batch's infeasible genes were dropped)."""
    chosen = []
    seen = set(known)
    for _ in range(MAX_BATCHES):
        if len(chosen) >= count:
            break
        for row in propose(OVERSAMPLE * max(count, 8)):
            gene = tuple(int(v) for v in row)
            if gene not in seen:
                seen.add(gene)
                chosen.append(gene)
                if len(chosen) == count:
                    break
    return chosen


class StageGenes:
    """Genes of one stage under a MAC budget (SP's stage EA space).

    A gene holds one index per position into the position's count table;
    proposals whose cost exceeds the budget, or falls below `lowest`, are
    rejected. Uniform proposals come first; if too few fit, proposals are
    drawn below a random cap per gene (still filtered).

    Args:
        table_sizes: Number of counts each position may take.
        costs: Function `(n, positions) genes -> (n,) MACs`.
        budget: The stage's MAC budget.
        lowest: The fewest MACs a gene may cost (0: no lower bound).
    """

    def __init__(self, table_sizes, costs, budget, lowest=0.0):
        self.sizes = np.asarray(table_sizes, dtype=np.int64)
        self.costs = costs
        self.budget = float(budget)
        self.lowest = float(lowest)

    def fits(self, genes):
        """Whether each gene's cost is within `[lowest, budget]`."""
        costs = self.costs(np.atleast_2d(genes))
        return (costs <= self.budget * (1 + 1e-12)) & (costs >= self.lowest)

    def random(self, rng, count):
        genes = rng.integers(0, self.sizes, size=(count, len(self.sizes)))
        kept = genes[self.fits(genes)]
        if len(kept) >= count // OVERSAMPLE:
            return kept
        cap = rng.random((count, 1))
        low = np.floor(
            rng.random((count, len(self.sizes))) * cap * self.sizes
        ).astype(np.int64)
        return np.concatenate([kept, low[self.fits(low)]])

    def mutate(self, rng, parents, count, probability):
        chosen = parents[rng.integers(0, len(parents), count)]
        redraw = rng.random(chosen.shape) < probability
        fresh = rng.integers(0, self.sizes, size=chosen.shape)
        genes = np.where(redraw, fresh, chosen)
        return genes[self.fits(genes)]

    def crossover(self, rng, parents, count):
        first = parents[rng.integers(0, len(parents), count)]
        second = parents[rng.integers(0, len(parents), count)]
        genes = np.where(rng.random(first.shape) < 0.5, first, second)
        return genes[self.fits(genes)]


class BudgetGenes:
    """Per-stage budgets in units that sum to a total (the manager's space).

    A gene holds one integer per stage between its lower bound (the units
    its smallest widths need) and upper bound (its full width) with a fixed
    sum; mutation and crossover redraw positions and then move single units
    between stages (at random, within the bounds) to restore the sum.

    Args:
        lower: Fewest units per stage.
        upper: Most units per stage.
        total: The sum every gene has.

    Raises:
        ValueError: If no gene satisfies the bounds and the sum.
    """

    def __init__(self, lower, upper, total):
        self.lower = np.asarray(lower, dtype=np.int64)
        self.upper = np.asarray(upper, dtype=np.int64)
        self.total = int(total)
        if (
            np.any(self.lower > self.upper)
            or self.lower.sum() > self.total
            or self.upper.sum() < self.total
        ):
            raise ValueError(
                "No stage budgets fit: the stages need at least "
                f"{self.lower.sum()} and at most {self.upper.sum()} of "
                f"{self.total} units (per stage {self.lower.tolist()} to "
                f"{self.upper.tolist()})."
            )

    def random(self, rng, count):
        shares = rng.dirichlet(np.ones(len(self.lower)), size=count)
        spare = self.total - self.lower.sum()
        genes = self.lower + np.array(
            [rng.multinomial(spare, p) for p in shares], dtype=np.int64
        )
        return np.array([self._repair(rng, g) for g in genes])

    def mutate(self, rng, parents, count, probability):
        chosen = parents[rng.integers(0, len(parents), count)]
        redraw = rng.random(chosen.shape) < probability
        fresh = rng.integers(self.lower, self.upper + 1, size=chosen.shape)
        genes = np.where(redraw, fresh, chosen)
        return np.array([self._repair(rng, g) for g in genes])

    def crossover(self, rng, parents, count):
        first = parents[rng.integers(0, len(parents), count)]
        second = parents[rng.integers(0, len(parents), count)]
        genes = np.where(rng.random(first.shape) < 0.5, first, second)
        return np.array([self._repair(rng, g) for g in genes])

    def _repair(self, rng, gene):
        """Clips to the bounds, then moves single units until the sum is
        right."""
        gene = np.clip(gene, self.lower, self.upper)
        while gene.sum() != self.total:
            step = 1 if gene.sum() < self.total else -1
            room = gene < self.upper if step > 0 else gene > self.lower
            gene[rng.choice(np.flatnonzero(room))] += step
        return gene
