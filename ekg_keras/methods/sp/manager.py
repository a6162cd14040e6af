"""SP's EA manager (SP paper, Sec. 3.3, Alg. 2): per-stage budgets summing
to a total, each scored by the stage EAs it needs.

A manager gene splits the total MAC budget into per-stage budgets, in
`units` (budget / units each), so equal splits recur and each stage EA
(stage, budget) runs once and is remembered. A gene's fitness is the sum of
its stages' best losses. The stage EAs a generation needs run concurrently,
one worker per stage (threads: TensorFlow releases the interpreter while it
computes; with several GPUs each stage is pinned to one), or one after the
other; every stage EA draws its random numbers from `(seed, stage,
budget)`, so the result is the same either way and after a resume.
"""

import concurrent.futures
import contextlib
import dataclasses
import math
import threading

import numpy as np

from ekg_keras._backend import tf
from ekg_keras.methods.sp.evolution import BudgetGenes
from ekg_keras.methods.sp.evolution import Evolution
from ekg_keras.methods.sp.evolution import StageGenes

PARALLEL_MODES = ("auto", "threads", "sequential")


@dataclasses.dataclass(frozen=True)
class StageResult:
    """The best gene a stage EA found under one budget.

    Attributes:
        stage: The stage.
        budget: Its MAC budget.
        gene: Table index per position (the stage's groups).
        loss: Its distillation loss.
        curve: Best loss after each generation of the stage EA.
        scored: Genes the stage EA scored.
    """

    stage: int
    budget: float
    gene: tuple
    loss: float
    curve: tuple
    scored: int


class StageSearches:
    """Runs and remembers stage EAs, several at a time where possible.

    Args:
        fitnesses: One `StageFitness` per stage.
        settings: `EvolutionSettings` of a stage EA.
        seed: Int seed.
        window: A stage EA keeps to genes costing at least `1 - window` of
            its budget (if any does), so the stages use their budgets.
        parallel: "auto" (threads when the strategy has one replica and
            there are several stages), "threads" or "sequential".
        replicas: Replicas of the evaluation strategy.
        on_result: Called with each new `StageResult` (checkpoints).
        on_generation: Called after each stage EA generation (progress),
            from one thread at a time.
    """

    def __init__(
        self,
        fitnesses,
        settings,
        seed,
        window=0.0,
        parallel="auto",
        replicas=1,
        on_result=None,
        on_generation=None,
    ):
        if parallel not in PARALLEL_MODES:
            raise ValueError(
                f"`parallel` should be one of {PARALLEL_MODES}. Received: "
                f"parallel={parallel!r}"
            )
        self.fitnesses = fitnesses
        self.settings = settings
        self.seed = int(seed)
        self.window = float(window)
        self.concurrent = len(fitnesses) > 1 and (
            parallel == "threads" or (parallel == "auto" and replicas == 1)
        )
        self.on_result = on_result
        self.on_generation = on_generation
        self.results = {}
        self._lock = threading.Lock()
        self._devices = _accelerators() if self.concurrent else []

    def warm_up(self):
        """Compiles every stage's scoring (on its device), one at a time;
        functions traced concurrently could clash."""
        for index, fitness in enumerate(self.fitnesses):
            with self._device(index):
                lowest = np.zeros((1, fitness.num_genes), dtype=np.int64)
                fitness.losses(lowest)

    def get(self, stage, budget):
        """The remembered `StageResult` of (stage, budget), or None."""
        return self.results.get((stage, _key(budget)))

    def run(self, requests):
        """Runs the stage EAs of `(stage, budget)` pairs not run yet.

        Returns:
            One `StageResult` per request, in order.
        """
        pending = {}
        for stage, budget in requests:
            key = (stage, _key(budget))
            if key not in self.results:
                pending.setdefault(stage, set()).add(key[1])
        work = {s: sorted(keys) for s, keys in pending.items()}
        if self.concurrent and len(work) > 1:
            with concurrent.futures.ThreadPoolExecutor(len(work)) as pool:
                futures = [
                    pool.submit(self._run_stage, s, keys)
                    for s, keys in work.items()
                ]
                for future in futures:
                    future.result()
        else:
            for stage, keys in sorted(work.items()):
                self._run_stage(stage, keys)
        return [self.get(s, b) for s, b in requests]

    def state(self):
        """JSON-ready record of the remembered results."""
        return [
            dataclasses.asdict(r)
            for r in sorted(self.results.values(), key=_order)
        ]

    def restore(self, records):
        """Remembers results from a `state()` record."""
        for record in records:
            result = StageResult(
                stage=int(record["stage"]),
                budget=float(record["budget"]),
                gene=tuple(record["gene"]),
                loss=float(record["loss"]),
                curve=tuple(record["curve"]),
                scored=int(record["scored"]),
            )
            self.results[(result.stage, _key(result.budget))] = result

    def _run_stage(self, stage, keys):
        fitness = self.fitnesses[stage]
        with self._device(stage):
            for key in keys:
                search = self._evolution(stage, key)
                gene, loss = search.run(self._scoring(fitness))
                result = StageResult(
                    stage,
                    float(key),
                    gene,
                    loss,
                    tuple(search.best_per_generation),
                    len(search.scores),
                )
                with self._lock:
                    self.results[(stage, key)] = result
                    if self.on_result is not None:
                        self.on_result(result)

    def _scoring(self, fitness):
        """`fitness.losses`, reporting each generation scored."""
        if self.on_generation is None:
            return fitness.losses

        def score(genes):
            losses = fitness.losses(genes)
            with self._lock:
                self.on_generation()
            return losses

        return score

    def _evolution(self, stage, key):
        """The stage EA of (stage, budget): genes costing between
        `1 - window` of the budget and the budget, or, if none does, up
        to the budget."""
        fitness = self.fitnesses[stage]
        seed = (self.seed, 1 + stage, key)
        for lowest in (key * (1 - self.window), 0.0):
            space = StageGenes(fitness.table_sizes, fitness.costs, key, lowest)
            search = Evolution(space, self.settings, seed)
            if search.population:
                return search
        raise RuntimeError(
            f"SP stage {stage}: no widths fit its budget of {key:.0f} MACs "
            f"(the smallest need {fitness.cost_range()[0]:.0f})."
        )

    def _device(self, stage):
        if not self._devices:
            return contextlib.nullcontext()
        return tf.device(self._devices[stage % len(self._devices)])


class BudgetManager:
    """The EA manager: per-stage budgets that sum to `total` MACs.

    Args:
        searches: The `StageSearches`.
        total: The MAC budget to split (the stages' costs summed).
        units: Budget units (a gene's entries sum to this).
        settings: `EvolutionSettings` of the manager.
        seed: Int seed.

    Attributes:
        unit: MACs per unit.
        evolution: The `Evolution` over budget genes.
    """

    def __init__(self, searches, total, units, settings, seed):
        self.searches = searches
        self.total = float(total)
        self.units = int(units)
        self.unit = self.total / self.units
        ranges = [f.cost_range() for f in searches.fitnesses]
        lower = [max(1, math.ceil(low / self.unit - 1e-9)) for low, _ in ranges]
        upper = [
            max(1, math.ceil(high / self.unit - 1e-9)) for _, high in ranges
        ]
        self.space = BudgetGenes(lower, upper, self.units)
        self.evolution = Evolution(self.space, settings, (int(seed), 0))

    def budgets(self, gene):
        """The MAC budget of each stage for a manager gene."""
        return [u * self.unit for u in gene]

    def stage_results(self, gene):
        """The remembered `StageResult` of each stage for a gene."""
        return [
            self.searches.get(s, b) for s, b in enumerate(self.budgets(gene))
        ]

    def score(self, genes):
        """Fitness of manager genes: summed best stage losses."""
        requests = [
            (s, b) for gene in genes for s, b in enumerate(self.budgets(gene))
        ]
        self.searches.run(requests)
        return [sum(r.loss for r in self.stage_results(gene)) for gene in genes]

    def step(self):
        """Runs one manager generation; returns its best `(gene, loss)`."""
        return self.evolution.step(self.score)

    @property
    def done(self):
        """Whether the manager ran all its generations."""
        return self.evolution.done


def _key(budget):
    return round(float(budget))


def _order(result):
    return (result.stage, result.budget)


def _accelerators():
    """Logical GPUs (else none): each stage EA may use its own."""
    return [d.name for d in tf.config.list_logical_devices("GPU")]
