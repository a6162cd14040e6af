"""EKG: sub-network search guided by ensemble knowledge (EKG Alg. 1)."""

import dataclasses
import time

import numpy as np

from ekg_keras import _logging as log
from ekg_keras import ties
from ekg_keras._backend import tf
from ekg_keras.allocation import top_up
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.data.subsets import collect_subsets
from ekg_keras.evaluation import SubnetworkEvaluator
from ekg_keras.evaluation import compute_precision
from ekg_keras.methods.base import PruningMethod
from ekg_keras.methods.budget import TrainingBudget
from ekg_keras.methods.budget import check_epochs
from ekg_keras.methods.checkpoint import SearchCheckpoint
from ekg_keras.methods.claims import Claim
from ekg_keras.methods.claims import register_claim
from ekg_keras.methods.ekg import rules
from ekg_keras.methods.ekg.history import SearchStep
from ekg_keras.methods.ekg.objective import cross_entropy
from ekg_keras.methods.ekg.objective import ensemble_objective
from ekg_keras.methods.ekg.objective import soft_cross_entropy
from ekg_keras.methods.ekg.objective import softmax
from ekg_keras.methods.ekg.options import OPTION_SETS
from ekg_keras.methods.ekg.options import EKGOptions
from ekg_keras.methods.ekg.subset_finetune import finetune_one_epoch
from ekg_keras.methods.registry import register_method
from ekg_keras.methods.trajectory import Trajectory
from ekg_keras.numerics import NonFiniteError
from ekg_keras.numerics import check_finite
from ekg_keras.numerics import first_non_finite_layer
from ekg_keras.progress import Progress
from ekg_keras.taylor import ends_in_softmax


@register_method(
    "ekg",
    summary="EKG search, then memory-bank distillation",
    default_for="with data",
)
class EKGSearch(PruningMethod):
    """Greedy filter-pruning search guided by ensemble knowledge (EKG).

    Starting from a trained model, each step scores every channel by its
    first-order Taylor importance for `CE + CE(softmax(T), logits)` on a
    per-class validation subset, where T is the running mean of the logits
    of all sub-networks chosen so far (the ensemble knowledge). Each group
    proposes removing its weakest `search_step / producers` of channels
    (finer near the target); groups whose removal would cost the most
    importance are filtered out by a trimmed Otsu threshold; the remaining
    candidates are evaluated and the one with the lowest criterion is taken.
    The search stops when the FLOPs fraction reaches `flops`. Its
    trajectory feeds EKG's memory-bank distillation fine-tuning (the "ekg"
    fine-tuner, its default).

    Defaults follow the reference code (sseung0703/EKG); the knobs are the
    fields of `EKGOptions`, given as keyword arguments or `options=`.
    Common arguments (ignored layers, floors, FLOPs convention, strategy,
    checkpoint and TensorBoard directories) are those of
    `ekg_keras.methods.PruningMethod`; with `checkpoint_dir` the state is
    saved after every step and a new search on the same directory resumes.
    Under a `tf.distribute` strategy each batch is split over the replicas
    and batch normalization is synchronised, so the result does not depend
    on the number of replicas.

    Example:

    ```python
    search = ekg_keras.EKGSearch(model, flops=0.5, data=train)
    masked = search.run()          # hard-masked model, not slimmed
    small = ekg_keras.slim(masked)
    search.history[-1].accuracy
    ```

    Reference:
        Lee and Song, "Ensemble Knowledge Guided Sub-network Search and
        Fine-tuning for Filter Pruning", ECCV 2022.
    """

    # Custom train steps in TensorFlow (tf.GradientTape, tf.function).
    backends = ("tensorflow",)
    Options = EKGOptions
    option_sets = OPTION_SETS
    needs_data = True
    finetuner = "ekg"
    smoke_options = {
        "val_per_class": 4,
        "subset_per_class": 4,
        "batch_size": 32,
    }

    def __init__(self, model, scope, data=None, **kwargs):
        super().__init__(model, scope, data, **kwargs)
        self.ensemble = None
        self.evaluator = None
        self.checkpoint = SearchCheckpoint(self.checkpoint_dir)

    def run(self, fitter=None, max_steps=None):
        """Runs (or resumes) the search; returns the hard-masked model.

        Args:
            fitter: Unused (the search trains only its one-epoch subset
                fine-tune, itself).
            max_steps: Stop after this many new steps even if the target is
                not reached (with `checkpoint_dir`, a later `run` resumes).

        Raises:
            ValueError: For bad data.
            NonFiniteError: For NaN or infinity in data, scores or losses.
        """
        self._max_steps = max_steps
        return super().run(fitter)

    @classmethod
    def training_budget(cls, epochs, options=None):
        """The search's one-epoch fine-tune on D_subset (Alg. 1, line 1;
        counted as a whole epoch, an upper bound: the subset is at most
        the training set), then fine-tuning for the rest."""
        epochs = check_epochs(epochs)
        warm = int(dict(options or {}).get("finetune", True))
        if epochs <= warm:
            raise ValueError(
                f"EKG's budget should leave fine-tuning epochs after its "
                f"{warm}-epoch subset fine-tune. Received: epochs={epochs}"
            )
        return TrainingBudget(
            epochs,
            phases=(("subset_finetune", warm),),
            finetune_epochs=epochs - warm,
        )

    def trajectory(self):
        """The chosen sub-networks, unpruned first, with their losses."""
        if not self.history:
            return None
        return Trajectory(
            [step.keep_masks() for step in self.history],
            np.array([step.loss for step in self.history]),
            np.array([step.flops_fraction for step in self.history]),
        )

    def apply_keep(self, keep):
        """Writes keep masks (and, with `rescale_kernels`, rescales)."""
        self.evaluator.set_keep(keep)

    # The search.

    def search(self, fitter):
        del fitter
        self.history, self.ensemble = [], None
        options = self.options
        num_classes = int(self.setup.source.outputs[0].shape[-1])
        subsets = self._subsets(num_classes)
        state = self._load_state()
        # Over several replicas, normalize with the statistics of the whole
        # batch, so the search does not depend on the number of replicas.
        synchronized = self.strategy.num_replicas_in_sync > 1 or None
        with batchnorm_settings(self.model, synchronized=synchronized):
            if state is None and self.target < 1.0:
                self._finetune(subsets)
            # Candidates are evaluated in training mode (batch statistics);
            # a momentum of 1 keeps the moving averages as they are.
            with (
                batchnorm_settings(self.model, momentum=1.0),
                compute_precision(self.model, options.precision),
            ):
                self.evaluator = SubnetworkEvaluator(
                    self.model,
                    self.graph,
                    subsets.x_val,
                    subsets.y_val,
                    batch_size=options.batch_size,
                    strategy=self.strategy,
                    cache=options.cache,
                    rescale_kernels=options.rescale_kernels,
                    batch_statistics=options.batch_statistics,
                    objective=ensemble_objective,
                    jit_compile=options.jit_compile,
                    layout=options.layout,
                )
                self._search(subsets.y_val, state)
        return self.model

    def _search(self, labels, state):
        sizes = self.graph.sizes
        prunable = np.array([g.prunable for g in self.graph.groups])
        self._steps, self._fine = rules.step_sizes(
            sizes,
            [len(g.producers) for g in self.graph.groups],
            self.options.search_step,
        )
        if state is None:
            widths = np.ones(len(sizes))
            ranks = [np.arange(size) for size in sizes]
            start = time.perf_counter()
            logits = self.evaluator.logits()
            ensemble, members = logits, 1
            self._record(
                0, None, widths, ranks, logits, labels, np.nan, 1, start
            )
        else:
            widths, ranks, ensemble, members = state
            self.evaluator.set_keep(self._keep(widths, ranks))
        writer = self._summary_writer()
        progress = self._progress()
        taken = 0
        max_steps = self._max_steps
        while self.history[-1].flops_fraction > self.target and (
            max_steps is None or taken < max_steps
        ):
            taken += 1
            start = time.perf_counter()
            scores = self._importance(ensemble)
            alive = self._keep(widths, ranks)
            ranks = [
                rules.ranks(s, a) if p else r
                for s, a, r, p in zip(scores, alive, ranks, prunable)
            ]
            keep = self._keep(widths, ranks)
            if any(not np.array_equal(k, a) for k, a in zip(keep, alive)):
                # Not expected (masked channels rank last), but then the
                # scored masks and their cached activations are stale.
                self.evaluator.set_keep(keep)
                self.evaluator.cache_prefix()
            group, width, logits, objective, tried = self._best_candidate(
                scores, widths, ranks, prunable, ensemble, labels
            )
            widths = widths.copy()
            widths[group] = width
            self.evaluator.set_keep(self._keep(widths, ranks), [group])
            ensemble = rules.running_mean(ensemble, members, logits)
            members += 1
            self._record(
                len(self.history),
                group,
                widths,
                ranks,
                logits,
                labels,
                objective,
                tried,
                start,
            )
            self._save_state(widths, ranks, ensemble, members)
            self._report(writer)
            before, after = (s.flops_fraction for s in self.history[-2:])
            progress.update(100 * (before - after))
        self.finished = self.history[-1].flops_fraction <= self.target
        if self.finished and self.scope.round_to != 1 and len(self.history) > 1:
            ensemble = self._fill_budget(
                widths, ranks, ensemble, members, labels, writer
            )
        self.ensemble = ensemble
        if self.verbose and len(self.history) == 1:
            log.info(
                f"EKG search: the model already keeps "
                f"{self.history[0].flops_fraction:.1%} <= {self.target:.1%}"
                " of its FLOPs; nothing to prune."
            )

    def _fill_budget(self, widths, ranks, ensemble, members, labels, writer):
        """With `round_to` > 1 the last step can land a whole level below
        the target; the most pruned groups then take channels back (their
        best-ranked removed ones) while the FLOPs stay within the target,
        as a last recorded step. Returns the ensemble after it."""
        sizes = self.graph.sizes.astype(np.float64)
        counts = self._keep_counts(widths, ranks)
        raised = top_up(
            counts,
            self.setup.levels,
            self.setup.counter.macs,
            self.setup.target_macs,
            priority=lambda group, keep: -keep[group] / sizes[group],
        )
        changed = np.flatnonzero(raised != counts)
        if not len(changed):
            return ensemble
        start = time.perf_counter()
        widths = widths.copy()
        widths[changed] = raised[changed] / sizes[changed]
        self.evaluator.set_keep(self._keep(widths, ranks), list(changed))
        logits = self.evaluator.logits()
        ensemble = rules.running_mean(ensemble, members, logits)
        self._record(
            len(self.history),
            int(changed[0]),
            widths,
            ranks,
            logits,
            labels,
            np.nan,
            1,
            start,
        )
        self._save_state(widths, ranks, ensemble, members + 1)
        self._report(writer)
        return ensemble

    def _importance(self, ensemble):
        step = len(self.history)
        try:
            return self.evaluator.importance(ensemble)
        except NonFiniteError as error:
            raise NonFiniteError(f"EKG step {step}: {error}") from None

    def _best_candidate(
        self, scores, widths, ranks, prunable, ensemble, labels
    ):
        floors = self.setup.floors
        costs = np.full(len(widths), rules.UNAVAILABLE)
        for group in np.flatnonzero(prunable):
            kept = rules.kept_count(len(ranks[group]), widths[group])
            if kept > floors[group]:
                costs[group] = self._cost(group, scores[group], widths)
        if self.options.variant == "code":
            checked = rules.groups_to_check(costs)
        else:
            checked = costs < rules.UNAVAILABLE
        if not checked.any():
            raise RuntimeError(
                "No group can shrink further, yet the FLOPs fraction is "
                f"{self.history[-1].flops_fraction:.4f} > {self.target}."
            )
        knowledge = softmax(ensemble)
        groups = np.flatnonzero(checked)
        widths_tried, keeps = [], []
        for group in groups:
            trial = widths.copy()
            trial[group] = self._candidate_width(group, widths, ranks)
            widths_tried.append(trial[group])
            keeps.append(self._keep(trial, ranks))
        # All candidates in one evaluator call (one compiled call per batch
        # with the stacked layout); the masks end as they were.
        candidate_logits = self.evaluator.evaluate(keeps)
        objectives = []
        for group, logits in zip(groups, candidate_logits):
            objective = float(
                np.mean(
                    cross_entropy(labels, logits)
                    + soft_cross_entropy(knowledge, logits)
                )
            )
            check_finite(
                objective,
                "The candidate objective",
                f"EKG step {len(self.history)}, group {group} "
                f"({self.graph.groups[group].producers[0]})",
            )
            objectives.append(objective)
        # Near-ties go to the lowest group, whatever the CPU's rounding.
        best = ties.argmin(objectives)
        return (
            groups[best],
            widths_tried[best],
            candidate_logits[best],
            objectives[best],
            int(checked.sum()),
        )

    def _cost(self, group, scores, widths):
        """The importance a group's next regular step would remove."""
        if self.scope.round_to == 1:
            return rules.candidate_cost(
                scores, widths[group], self._steps[group]
            )
        size = len(scores)
        kept = rules.kept_count(size, widths[group])
        new = rules.level_step(
            self.setup.levels.levels[group], kept, self._steps[group] * size
        )
        return rules.removal_cost(scores, kept, new)

    def _candidate_width(self, group, widths, ranks):
        if self.scope.round_to != 1:
            return self._level_candidate_width(group, widths, ranks)
        size = self.graph.groups[group].size
        candidate = max(
            round(widths[group] - self._steps[group], 5),
            self.setup.floors[group] / size,
        )

        def fraction_at(width):
            trial = widths.copy()
            trial[group] = width
            return self._fraction(trial, ranks)

        if fraction_at(candidate) < self.target:
            candidate = rules.fine_width(
                candidate,
                self.options.search_step,
                self._fine[group],
                fraction_at,
                self.target,
            )
        return candidate

    def _level_candidate_width(self, group, widths, ranks):
        """`_candidate_width` on the allowed counts of `round_to` > 1:
        steps and the finer search near the target move between multiples
        of `round_to` (or the group's full size)."""
        size = self.graph.groups[group].size
        allowed = self.setup.levels.levels[group]
        kept = rules.kept_count(size, widths[group])
        new = rules.level_step(allowed, kept, self._steps[group] * size)

        def fraction_at(count):
            trial = widths.copy()
            trial[group] = count / size
            return self._fraction(trial, ranks)

        if fraction_at(new) < self.target:
            new = rules.level_fine_count(
                allowed, kept, new, fraction_at, self.target
            )
        return new / size

    # Bookkeeping.

    def _keep(self, widths, ranks):
        return [
            rules.keep_mask(rank, width)
            if group.prunable
            else np.ones(group.size, dtype=bool)
            for group, rank, width in zip(self.graph.groups, ranks, widths)
        ]

    def _keep_counts(self, widths, ranks):
        return np.array(
            [
                rules.kept_count(len(rank), width)
                if group.prunable
                else group.size
                for group, rank, width in zip(self.graph.groups, ranks, widths)
            ],
            dtype=np.float64,
        )

    def _fraction(self, widths, ranks):
        return self.setup.fraction(self._keep_counts(widths, ranks))

    def _record(
        self,
        step,
        group,
        widths,
        ranks,
        logits,
        labels,
        objective,
        tried,
        start,
    ):
        loss = float(np.mean(cross_entropy(labels, logits)))
        check_finite(loss, "The validation loss", f"EKG step {step}")
        self.history.append(
            SearchStep(
                step=step,
                group=None if group is None else int(group),
                widths=np.array(widths),
                ranks=[np.array(r) for r in ranks],
                keep_counts=self._keep_counts(widths, ranks).astype(np.int64),
                flops_fraction=self._fraction(widths, ranks),
                loss=loss,
                accuracy=float(np.mean(np.argmax(logits, -1) == labels)),
                objective=objective,
                logits=np.array(logits),
                candidates=tried,
                seconds=time.perf_counter() - start,
            )
        )

    def _report(self, writer):
        step = self.history[-1]
        if writer is not None:
            with writer.as_default():
                for name in ("flops_fraction", "loss", "accuracy", "objective"):
                    tf.summary.scalar(name, getattr(step, name), step.step)
                writer.flush()
        if self.verbose:
            group = self.graph.groups[step.group]
            name = group.producers[0]
            if len(group.producers) > 1:
                name += f" +{len(group.producers) - 1}"
            before = self.history[-2].keep_counts[step.group]
            log.info(
                f"EKG step {step.step}: FLOPs {step.flops_fraction:.3f} "
                f"(target {self.target}), {name} {before} -> "
                f"{step.keep_counts[step.group]} channels, val loss "
                f"{step.loss:.4f}, acc {step.accuracy:.2%}, "
                f"{step.candidates} candidates, {step.seconds:.1f}s"
            )

    def _progress(self):
        """The search's `Progress`, in points of FLOPs removed (a step's
        time varies with the candidates it scores, its reach with the group
        it shrinks): the estimate of a long search comes after a few
        steps; every step prints its own line."""
        left = 100 * (self.history[-1].flops_fraction - self.target)
        return Progress(
            "EKG search",
            max(left, 0.0),
            "points of the FLOPs to remove",
            self.verbose,
            hint="A larger `search_step`, or fewer `val_per_class`, "
            "shortens it.",
        )

    def _summary_writer(self):
        if self.tensorboard_dir is None:
            return None
        return tf.summary.create_file_writer(str(self.tensorboard_dir))

    # Set-up.

    def _subsets(self, num_classes):
        options = self.options
        subsets = collect_subsets(
            self.data,
            num_classes,
            options.val_per_class,
            options.subset_per_class if options.finetune else 0,
            seed=options.seed,
        )
        if options.val_data is not None:
            whole = collect_subsets(
                options.val_data,
                num_classes,
                val_per_class=np.iinfo(np.int32).max,
                subset_per_class=0,
                seed=options.seed,
            )
            subsets = dataclasses.replace(
                subsets, x_val=whole.x_val, y_val=whole.y_val
            )
        return subsets

    def _finetune(self, subsets):
        if self.options.finetune and len(subsets.y_subset):
            finetune_one_epoch(
                self.model,
                subsets.x_subset,
                subsets.y_subset,
                batch_size=min(self.options.batch_size, len(subsets.y_subset)),
                strategy=self.strategy,
                logits=not ends_in_softmax(self.model),
            )
            broken = first_non_finite_layer(self.model)
            if broken is not None:
                raise NonFiniteError(
                    "EKG's one-epoch subset fine-tune made the weights "
                    f"non-finite (first: {broken}); check the data."
                )
        self.checkpoint.save_weights(self.model, "finetuned")

    # Checkpoints.

    def _save_state(self, widths, ranks, ensemble, members):
        if not self.checkpoint.enabled:
            return
        arrays = {
            "widths": widths,
            "ensemble": ensemble,
            "members": np.array(members),
        }
        for i, rank in enumerate(ranks):
            arrays[f"ranks_{i}"] = rank
        for i, step in enumerate(self.history):
            arrays[f"logits_{i}"] = step.logits
            arrays[f"step_widths_{i}"] = step.widths
            for j, rank in enumerate(step.ranks):
                arrays[f"step_ranks_{i}_{j}"] = rank
        steps = [
            {
                k: getattr(s, k)
                for k in (
                    "step",
                    "group",
                    "loss",
                    "accuracy",
                    "objective",
                    "candidates",
                    "seconds",
                )
            }
            for s in self.history
        ]
        self.checkpoint.save(arrays, {"steps": steps})

    def _load_state(self):
        if not self.checkpoint.exists():
            return None
        self.checkpoint.load_weights(self.model, "finetuned")
        arrays, record = self.checkpoint.load()
        groups = len(self.graph.groups)
        for i, entry in enumerate(record["steps"]):
            widths = arrays[f"step_widths_{i}"]
            ranks = [arrays[f"step_ranks_{i}_{j}"] for j in range(groups)]
            self.history.append(
                SearchStep(
                    widths=widths,
                    ranks=ranks,
                    keep_counts=self._keep_counts(widths, ranks).astype(
                        np.int64
                    ),
                    flops_fraction=self._fraction(widths, ranks),
                    logits=arrays[f"logits_{i}"],
                    **entry,
                )
            )
        ranks = [arrays[f"ranks_{j}"] for j in range(groups)]
        if self.verbose:
            log.info(
                f"EKG search: resumed after step {record['steps'][-1]['step']}"
                f" from {self.checkpoint.directory}"
            )
        return (
            arrays["widths"],
            ranks,
            arrays["ensemble"],
            int(arrays["members"]),
        )

register_claim(
    Claim(
        "ekg_search_ge_uniform",
        "EKG's searched sub-network > uniform L1 before fine-tuning",
        "ekg",
        "l1",
        "Lee and Song, ECCV 2022 (poster: comparison with the "
        "conventional search)",
        measure="pruned",
    )
)
register_claim(
    Claim(
        "ekg_distillation_ge_plain",
        "EKG distillation fine-tuning >= plain fine-tuning of the same "
        "sub-network",
        "ekg",
        "ekg",
        "Lee and Song, ECCV 2022 (poster: ablation, Fine-tune column)",
        measure="ekg",
        reference_measure="plain",
    )
)
