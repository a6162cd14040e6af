"""SP (stage-wise channel pruning) as a registered method, "sp"."""

import dataclasses
import time
import typing

import keras
import numpy as np

from ekg_keras import _logging as log
from ekg_keras._backend import tf
from ekg_keras.allocation.levels import top_up
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.methods.base import PruningMethod
from ekg_keras.methods.budget import TrainingBudget
from ekg_keras.methods.budget import check_epochs
from ekg_keras.methods.checkpoint import SearchCheckpoint
from ekg_keras.methods.claims import Claim
from ekg_keras.methods.claims import register_claim
from ekg_keras.methods.registry import register_method
from ekg_keras.methods.sp import widths as widths_lib
from ekg_keras.methods.sp.fitness import StageFitness
from ekg_keras.methods.sp.history import ManagerGeneration
from ekg_keras.methods.sp.history import SPResult
from ekg_keras.methods.sp.manager import BudgetManager
from ekg_keras.methods.sp.manager import StageSearches
from ekg_keras.methods.sp.options import OPTION_SETS
from ekg_keras.methods.sp.options import SPOptions
from ekg_keras.methods.sp.supernet import StageSuperNet
from ekg_keras.methods.sp.validation import hold_out
from ekg_keras.progress import Progress
from ekg_keras.training.fitting import TrainingPhase


@register_method(
    "sp", summary="SP: stage-wise super-net training, evolutionary search"
)
class StagewisePruning(PruningMethod):
    """Stage-wise channel pruning (SP): super-net, then per-stage EAs.

    1. Part of the training data (`val_per_class` per class) is held out.
    2. The model becomes a `StageSuperNet` (prefix widths per group, ranked
       by `criterion`; stages where the resolution changes; 1x1 adapters)
       and trains for `supernet_epochs` with the sandwich rule and
       stage-wise in-place distillation, through the fitter (in the
       trainers: their distributed loop with backups).
    3. The full network's stage inputs and outputs on the held-out split
       are computed once; the EA manager splits the FLOPs budget between
       stages, each split scored by one stage EA per stage (fitness: the
       stage's distillation loss through the shared `SubnetworkEvaluator`),
       concurrently where the machine allows.
    4. The best stage sub-networks are joined (adapters dropped). A stage
       is searched with its input at full width, so the joined network
       costs less than its stage budgets; the budgets are rescaled and the
       stage EAs rerun (`repair_rounds`) until it lands within `tolerance`
       below `flops`, and the last gap is filled a channel at a time.

    The result is the masked model with the super-net's weights (batch
    normalization keeps the full network's statistics: recalibrate, as
    `prune` does). The paper retrains it from scratch (fine-tuner
    "scratch", registered here); the default fine-tuner is "plain", which
    fine-tunes the super-net's weights and is much better on short
    schedules (see the README). With `checkpoint_dir` the trained super-net
    and the search state are saved, and a new run on the same directory
    resumes.

    Attributes (besides the protocol's):
        supernet: The `StageSuperNet`.
        split: The held-out `ValidationSplit`.
        history: One `ManagerGeneration` per manager generation.
        result: The `SPResult`.
        phase_seconds: Wall seconds of this run's parts: "supernet"
            (training; absent when loaded from the checkpoint), "features"
            (the cached stage features), "manager", "assembly".

    Example:

    ```python
    sp = ekg_keras.methods.get("sp").create(
        model, 0.5, (x, y), supernet_epochs=10, population=32)
    masked = sp.run()
    ekg_keras.methods.sp.plot_sp(sp, "sp.png")
    ```

    Reference:
        Zhang and Ou, "Stage-wise Channel Pruning for Model Compression"
        (the method: Sec. 3; its settings: Sec. 4.1).
    """

    # Custom train steps in TensorFlow (tf.GradientTape, tf.function).
    backends = ("tensorflow",)
    Options = SPOptions
    option_sets = OPTION_SETS
    needs_data = True
    needs_sample_ids = True  # The super-net trains on batches with ids.
    finetuner = "plain"
    smoke_options: typing.ClassVar[dict] = {
        "supernet_epochs": 1,
        "val_per_class": 4,
        "num_ratios": 8,
        "population": 8,
        "iterations": 2,
        "manager_population": 4,
        "manager_iterations": 2,
        "budget_units": 20,
        "batch_size": 32,
    }

    # CPU-sized settings for benchmarks/compare.py and benchmarks/sp.py
    # (a 2-core machine, digits at 16x16): the "cpu" option set (a short
    # super-net training and small EAs) at the comparison's batch size.
    compare_options: typing.ClassVar[dict] = {
        **OPTION_SETS["cpu"],
        "batch_size": 150,
        # Within the comparison's half point below the target.
        "tolerance": 0.005,
    }

    def __init__(self, model, scope, data=None, **kwargs):
        super().__init__(model, scope, data, **kwargs)
        self.checkpoint = SearchCheckpoint(self.checkpoint_dir)
        self.supernet = None
        self.manager = None
        self.progress = None
        self.split = None
        self.result = None
        self.phase_seconds = {}
        self._max_generations = None

    def run(self, fitter=None, max_generations=None):
        """Runs (or resumes) SP; returns the masked model.

        Args:
            fitter: Runs the super-net training (default: a `Fitter` on
                `data`).
            max_generations: Stop after this many new manager generations
                (with `checkpoint_dir`, a later run resumes).
        """
        self._max_generations = max_generations
        return super().run(fitter)

    @classmethod
    def training_budget(cls, epochs, options=None):
        """Half the budget (rounded up) trains the super-net, the rest
        fine-tunes the searched sub-network: the paper's two training
        stages (Sec. 3, Sec. 4.1), at equal cost."""
        del options
        epochs = check_epochs(epochs, minimum=2)
        supernet = (epochs + 1) // 2
        return TrainingBudget(
            epochs,
            {"supernet_epochs": supernet},
            (("supernet", supernet),),
            finetune_epochs=epochs - supernet,
        )

    # The method.

    def search(self, fitter):
        options = self.options
        self.history, self.result = [], None
        self.split = hold_out(
            fitter.ordered_data(with_ids=True),
            int(self.setup.source.outputs[0].shape[-1]),
            options.val_per_class,
        )
        state = self.checkpoint.load() if self.checkpoint.exists() else None
        self.supernet = self._build_supernet()
        self.phase_seconds = {}
        if state is None:
            start = time.perf_counter()
            self._train(fitter)
            self.phase_seconds["supernet"] = time.perf_counter() - start
            self.checkpoint.save_weights(self.supernet, "supernet")
            self._save({}, {"trained": True})
        else:
            self.checkpoint.load_weights(self.supernet, "supernet")
            if self.verbose:
                log.info(
                    "SP: trained super-net loaded from "
                    f"{self.checkpoint.directory}"
                )
        self._search(state)
        return self.model

    def supernet_phase(self):
        """The super-net's `TrainingPhase` (ids carried, own optimizer)."""
        options = self.options
        with self.strategy.scope():
            optimizer = keras.optimizers.SGD(
                options.learning_rate,
                momentum=options.momentum,
                weight_decay=options.weight_decay or None,
            )

        def learning_rate(epoch):
            steps = epoch // options.decay_every
            return options.learning_rate * options.decay_rate**steps

        return TrainingPhase(
            "supernet",
            self.supernet,
            options.supernet_epochs,
            optimizer=optimizer,
            with_ids=True,
            callbacks=[keras.callbacks.LearningRateScheduler(learning_rate)],
        )

    def _build_supernet(self):
        options, setup = self.options, self.setup
        ranks = widths_lib.channel_ranks(
            setup,
            options.criterion,
            data=(self.split.images, self.split.labels),
        )
        with self.strategy.scope():
            return StageSuperNet(
                self.model,
                criterion=options.criterion,
                ranks=ranks,
                num_ratios=options.num_ratios,
                smallest_ratio=options.smallest_ratio,
                scope=setup.scope,
                validation_ids=self.split.ids,
                seed=options.seed,
            )

    def _train(self, fitter):
        if self.verbose:
            stages = self.supernet.stages
            log.info(
                f"SP: super-net of {len(stages)} stage(s) ("
                + ", ".join(f"{len(s.groups)} groups" for s in stages)
                + f"), {len(self.split)} samples held out; training "
                f"{self.options.supernet_epochs} epoch(s)"
            )
        fitter.fit(self.supernet_phase())

    def _search(self, state):
        options, setup = self.options, self.setup
        start = time.perf_counter()
        inputs, outputs = self.supernet.stage_features(
            self.split.images, options.batch_size
        )
        self.phase_seconds["features"] = time.perf_counter() - start
        replicas = self.strategy.num_replicas_in_sync
        synchronized = replicas > 1 or None
        with batchnorm_settings(
            self.model, synchronized=synchronized, momentum=1.0
        ):
            fitnesses = [
                StageFitness(
                    self.supernet,
                    i,
                    inputs[i],
                    outputs[i],
                    scope=setup.scope,
                    batch_size=options.batch_size,
                    strategy=self.strategy,
                )
                for i in range(len(self.supernet.stages))
            ]
            self.progress = self._progress(len(fitnesses))
            self.searches = StageSearches(
                fitnesses,
                options.stage_settings(),
                options.seed,
                window=options.tolerance / self.target,
                parallel=options.parallel,
                replicas=replicas,
                on_result=lambda _: self._save_search(),
                on_generation=self._report_progress,
            )
            self.searches.warm_up()
            self.manager = BudgetManager(
                self.searches,
                self._stage_budget(fitnesses),
                options.budget_units,
                options.manager_settings(),
                options.seed,
            )
            if state is not None and "manager" in state[1]:
                self._restore(*state)
            if self.verbose:
                self._log_start(fitnesses, inputs, outputs, start)
            began = time.perf_counter()
            self._evolve()
            self.phase_seconds["manager"] = time.perf_counter() - began
            if not self.manager.done:
                self.finished = False
                return
            began = time.perf_counter()
            self.result = self._assemble(fitnesses)
            self.phase_seconds["assembly"] = time.perf_counter() - began
        self.setup.apply(self.supernet.keep_masks(self.result.keep_counts))
        self._report_result()

    def _stage_budget(self, fitnesses):
        """The MACs the manager splits: the target, or enough for every
        stage's smallest widths (whose joined network is cheaper still)."""
        lowest = sum(f.cost_range()[0] for f in fitnesses)
        units = self.options.budget_units
        needed = lowest * units / max(1, units - len(fitnesses))
        return max(self.setup.target_macs, needed)

    def _evolve(self):
        writer = self._summary_writer()
        taken = 0
        while not self.manager.done and (
            self._max_generations is None or taken < self._max_generations
        ):
            start = time.perf_counter()
            gene, loss = self.manager.step()
            taken += 1
            results = self.manager.stage_results(gene)
            full = self.setup.full_macs
            self.history.append(
                ManagerGeneration(
                    generation=self.manager.evolution.generation,
                    budgets=tuple(b / full for b in self.manager.budgets(gene)),
                    loss=loss,
                    stage_losses=tuple(r.loss for r in results),
                    stage_eas=len(self.searches.results),
                    seconds=time.perf_counter() - start,
                )
            )
            self._save_search()
            self._report_generation(writer)

    # Assembling the result.

    def _assemble(self, fitnesses):
        """The best stage sub-networks joined, brought within the
        tolerance below the target."""
        target, tolerance = self.target, self.options.tolerance
        best_gene = self.manager.evolution.best[0]
        budgets = np.array(self.manager.budgets(best_gene))
        ranges = np.array([f.cost_range() for f in fitnesses])
        tried = [self._joined(fitnesses, budgets)]
        scales = [1.0]
        aim = target - tolerance / 2
        for _ in range(self.options.repair_rounds):
            fraction = tried[-1][1]
            if target - tolerance <= fraction <= target:
                break
            scale = _next_scale(scales, [t[1] for t in tried], aim)
            scales.append(scale)
            scaled = np.clip(scale * budgets, ranges[:, 0], ranges[:, 1])
            tried.append(self._joined(fitnesses, scaled))
        inside = [t for t in tried if target - tolerance <= t[1] <= target]
        topped = False
        if inside:
            chosen = min(inside, key=lambda t: t[2])
        else:
            below = [t for t in tried if t[1] <= target]
            if not below:
                below = [self._joined(fitnesses, ranges[:, 0])]
            chosen = max(below, key=lambda t: t[1])
            chosen = self._top_up(chosen)
            topped = True
        counts, fraction, _, budgets, results = chosen
        full = self.setup.full_macs
        return SPResult(
            keep_counts=counts,
            flops_fraction=fraction,
            budgets=tuple(float(b) / full for b in budgets),
            stage_losses=tuple(r.loss for r in results),
            stage_curves=tuple(r.curve for r in results),
            repairs=len(tried) - 1,
            topped_up=topped,
        )

    def _joined(self, fitnesses, budgets):
        """`(counts, fraction, loss, budgets, results)` of the network
        joined from each stage's best gene under `budgets`."""
        results = self.searches.run(list(enumerate(budgets)))
        counts = self.supernet.full_counts()
        for fitness, result in zip(fitnesses, results):
            stage_counts = fitness.counts([result.gene])[0]
            counts[fitness.groups] = stage_counts[fitness.groups]
        fraction = self.setup.fraction(counts)
        loss = sum(r.loss for r in results)
        return counts, fraction, loss, tuple(budgets), results

    def _top_up(self, chosen):
        """Adds single channels (narrowest groups first) while the FLOPs
        stay within the target."""
        counts, _, loss, budgets, results = chosen
        sizes = self.graph.sizes

        def narrowest(group, keep):
            return -keep[group] / sizes[group]

        raised = top_up(
            counts,
            self.setup.levels,
            self.setup.counter.macs,
            self.setup.target_macs,
            narrowest,
        )
        return raised, self.setup.fraction(raised), loss, budgets, results

    # Checkpoints.

    def _save(self, arrays, record):
        self.checkpoint.save(arrays, record)

    def _save_search(self):
        if not self.checkpoint.enabled:
            return
        arrays = {}
        for fitness in self.searches.fitnesses:
            genes = list(fitness.losses_by_gene)
            arrays[f"genes_{fitness.index}"] = np.array(
                genes, dtype=np.int64
            ).reshape(len(genes), fitness.num_genes)
            arrays[f"losses_{fitness.index}"] = np.array(
                [fitness.losses_by_gene[g] for g in genes]
            )
        record = {
            "trained": True,
            "manager": self.manager.evolution.state(),
            "stages": self.searches.state(),
            "history": [dataclasses.asdict(h) for h in self.history],
        }
        self._save(arrays, record)

    def _restore(self, arrays, record):
        self.manager.evolution.restore(record["manager"])
        self.searches.restore(record["stages"])
        for fitness in self.searches.fitnesses:
            genes = arrays.get(f"genes_{fitness.index}")
            if genes is None:
                continue
            losses = arrays[f"losses_{fitness.index}"]
            fitness.losses_by_gene.update(
                {
                    tuple(int(v) for v in g): float(x)
                    for g, x in zip(genes, losses)
                }
            )
        self.history = [
            ManagerGeneration(
                **{
                    **h,
                    "budgets": tuple(h["budgets"]),
                    "stage_losses": tuple(h["stage_losses"]),
                }
            )
            for h in record["history"]
        ]
        if self.verbose:
            log.info(
                f"SP: search resumed after manager generation "
                f"{self.manager.evolution.generation} from "
                f"{self.checkpoint.directory}"
            )

    # Progress.

    def _summary_writer(self):
        if self.tensorboard_dir is None:
            return None
        return tf.summary.create_file_writer(str(self.tensorboard_dir))

    def _log_start(self, fitnesses, inputs, outputs, start):
        cached = sum(a.nbytes for a in inputs[1:]) + sum(
            a.nbytes for a in outputs
        )
        log.info(
            f"SP search: {len(fitnesses)} stage(s), stage features of "
            f"{len(self.split)} samples cached ({cached / 2**20:.1f} MiB) in "
            f"{time.perf_counter() - start:.1f} s; manager "
            f"{self.options.manager_population}x"
            f"{self.options.manager_iterations}, stage EAs "
            f"{self.options.population}x{self.options.iterations}"
            + (", concurrent" if self.searches.concurrent else "")
        )

    def _progress(self, stages):
        """The search's `Progress`, in stage EA generations. Stage EAs are
        remembered by budget, so a stage runs at most one EA per manager
        candidate and at most one per budget level (`budget_units` + 1),
        plus the assembly's repair rounds; `iterations` generations each.
        """
        options = self.options
        candidates = options.manager_population * options.manager_iterations
        eas = min(candidates, options.budget_units + 1)
        eas += options.repair_rounds + 1
        return Progress(
            "SP search",
            stages * eas * options.iterations,
            "stage EA generations (at most)",
            self.verbose,
            hint="Smaller `population`, `iterations`, `manager_population`, "
            "`manager_iterations` or `budget_units` shorten it.",
        )

    def _report_progress(self):
        manager = self.manager
        if manager is None:
            stage = "starting the manager"
        elif manager.done:
            stage = "assembling the result"
        else:
            stage = (
                f"manager generation {manager.evolution.generation + 1}/"
                f"{self.options.manager_iterations}"
            )
        finished = len(self.searches.results)
        self.progress.update(1, f"{stage}, {finished} stage EAs finished")

    def _report_generation(self, writer):
        entry = self.history[-1]
        if writer is not None:
            with writer.as_default():
                tf.summary.scalar("manager/loss", entry.loss, entry.generation)
                for i, (budget, loss) in enumerate(
                    zip(entry.budgets, entry.stage_losses)
                ):
                    tf.summary.scalar(
                        f"stage_{i}/budget", budget, entry.generation
                    )
                    tf.summary.scalar(f"stage_{i}/loss", loss, entry.generation)
                writer.flush()
        if self.verbose:
            log.info(
                f"SP manager generation {entry.generation}/"
                f"{self.options.manager_iterations}: loss {entry.loss:.4f}, "
                "budgets "
                + ", ".join(f"{b:.3f}" for b in entry.budgets)
                + f" of the FLOPs, {entry.stage_eas} stage EAs, "
                f"{entry.seconds:.1f}s"
            )

    def _report_result(self):
        if not self.verbose:
            return
        result = self.result
        log.info(
            f"SP result: FLOPs {result.flops_fraction:.4f} (target "
            f"{self.target}), stage losses "
            + ", ".join(f"{v:.4f}" for v in result.stage_losses)
            + f", {result.repairs} budget repair(s)"
            + (", topped up" if result.topped_up else "")
        )


def _next_scale(scales, fractions, aim):
    """The next budget scale: secant through the last two tries, or
    proportional after the first."""
    scale, fraction = scales[-1], fractions[-1]
    if len(scales) > 1 and fractions[-1] != fractions[-2]:
        slope = (fractions[-1] - fractions[-2]) / (scales[-1] - scales[-2])
        if slope > 0:
            return scale + (aim - fraction) / slope
    return scale * aim / max(fraction, 1e-9)

register_claim(
    Claim(
        "sp_ge_uniform",
        "SP's searched widths >= uniform widths (uniform L1)",
        "sp",
        "l1",
        "Zhang and Ou, abstract and Sec. 4.2, Table 2",
    )
)
