"""EKG: sub-network search guided by ensemble knowledge (SPEC.md 8.2)."""

import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf

from ekg_keras import _logging as log
from ekg_keras.allocation import ekg_rules as rules
from ekg_keras.allocation.ekg_data import collect_subsets
from ekg_keras.allocation.ekg_data import finetune_one_epoch
from ekg_keras.allocation.ekg_engine import Engine
from ekg_keras.allocation.levels import channel_floor
from ekg_keras.allocation.levels import check_min_channels
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.flops import FlopsCounter
from ekg_keras.flops import check_flops_fraction
from ekg_keras.graph import trace
from ekg_keras.layers import wrap
from ekg_keras.taylor import ends_in_softmax

VARIANTS = ("code", "poster")


@dataclasses.dataclass(frozen=True, eq=False)
class SearchStep:
    """One sub-network along the search.

    Attributes:
        step: 0 for the (fine-tuned) unpruned network, then 1, 2, ...
        group: Id of the group shrunk at this step (None at step 0).
        widths: Kept fraction per group (1.0 for fixed groups).
        ranks: Per group, the channel ranks used for the masks (0 = most
            important); a channel is kept when its rank is below the
            group's kept count.
        keep_counts: Channels kept per group.
        flops_fraction: FLOPs of this sub-network / FLOPs of the original.
        loss: Mean cross-entropy on the validation subset.
        accuracy: Accuracy on the validation subset.
        objective: The search criterion of the chosen candidate,
            `CE + CE(softmax(ensemble), logits)` (NaN at step 0).
        logits: Validation logits, shape (validation samples, classes).
        candidates: Candidates evaluated to choose this step.
        seconds: Wall time of the step.
    """

    step: int
    group: object
    widths: np.ndarray
    ranks: list
    keep_counts: np.ndarray
    flops_fraction: float
    loss: float
    accuracy: float
    objective: float
    logits: np.ndarray
    candidates: int
    seconds: float

    def keep_masks(self):
        """Boolean keep mask per group for this sub-network."""
        return [r < k for r, k in zip(self.ranks, self.keep_counts)]


class EKGSearch:
    """Greedy filter-pruning search guided by ensemble knowledge (EKG).

    Starting from a trained model, each step scores every channel by its
    first-order Taylor importance for `CE + CE(softmax(T), logits)` on a
    per-class validation subset, where T is the running mean of the logits
    of all sub-networks chosen so far (the ensemble knowledge). Each group
    proposes removing its weakest `search_step / producers` of channels
    (finer near the target); groups whose removal would cost the most
    importance are filtered out by a trimmed Otsu threshold; the remaining
    candidates are evaluated and the one with the lowest criterion is taken.
    The search stops when the FLOPs fraction reaches `flops`.

    Defaults follow the reference code (sseung0703/EKG); `variant="poster"`
    evaluates a candidate in every group instead of the Otsu-filtered ones
    (the poster's "sample candidates in each layer").

    Args:
        model: The trained model (functional or Sequential); not modified.
        flops: Fraction of FLOPs to keep, in (0, 1].
        data: Labelled training data (`tf.data.Dataset` of `(inputs,
            labels)` or an `(x, y)` tuple) to draw the subsets from.
        val_data: Optional labelled data used whole as the validation subset
            instead of drawing it from `data`.
        finetune: Fine-tune one epoch on the per-class subset first (SPEC
            8.2.2).
        search_step: Base width step (0.2).
        val_per_class: Validation samples per class (32).
        subset_per_class: Fine-tuning samples per class (256).
        batch_size: Batch size of scoring and evaluation (256).
        variant: "code" or "poster".
        rescale_kernels: Rescale masked kernels to keep their Frobenius norm,
            as the reference does (SPEC 8.1.3); `slim` keeps the rescale.
        batch_statistics: Evaluate with batch statistics (the reference) or
            with the moving averages.
        include_bn, include_fc: FLOPs convention (the reference counts BN).
        ignored_layers: Layers to keep whole.
        min_channels: Fewest channels a group may keep (1, as the
            reference), or a float in (0, 1): that fraction of the group's
            width. A group at its floor is no longer a candidate.
        cache: Evaluate candidates from cached activations (fast) or run
            the whole network per candidate (plain, like the reference).
        strategy: `tf.distribute` strategy (default: the one in scope).
        checkpoint_dir: Save the state after every step there, and resume
            from it when it exists.
        tensorboard_dir: Write the trajectory as TensorBoard scalars.
        verbose: 0 silent, 1 a line per step.
        seed: Seed of the subset shuffles (the reference fixes 1).

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

    def __init__(
        self,
        model,
        flops,
        data,
        *,
        val_data=None,
        finetune=True,
        search_step=0.2,
        val_per_class=32,
        subset_per_class=256,
        batch_size=256,
        variant="code",
        rescale_kernels=False,
        batch_statistics=True,
        include_bn=False,
        include_fc=True,
        ignored_layers=None,
        min_channels=1,
        cache=True,
        strategy=None,
        checkpoint_dir=None,
        tensorboard_dir=None,
        verbose=1,
        seed=1,
    ):
        self.target = check_flops_fraction(flops)
        if variant not in VARIANTS:
            raise ValueError(
                f"`variant` should be one of {VARIANTS}. Received: "
                f"variant={variant!r}"
            )
        if not 0 < search_step <= 1:
            raise ValueError(
                "`search_step` should be in (0, 1]. Received: "
                f"search_step={search_step!r}"
            )
        trace(model)  # Validates the model and warns about unknown layers.
        self.source = model
        self.data = data
        self.val_data = val_data
        self.finetune = finetune
        self.search_step = search_step
        self.val_per_class = val_per_class
        self.subset_per_class = subset_per_class
        self.batch_size = batch_size
        self.variant = variant
        self.rescale_kernels = rescale_kernels
        self.batch_statistics = batch_statistics
        self.include_bn = include_bn
        self.include_fc = include_fc
        self.ignored_layers = list(ignored_layers or ())
        self.min_channels = check_min_channels(min_channels)
        self.cache = cache
        self.strategy = strategy or tf.distribute.get_strategy()
        self.checkpoint_dir = checkpoint_dir
        self.tensorboard_dir = tensorboard_dir
        self.verbose = verbose
        self.seed = seed
        self.history = []
        self.ensemble = None
        self.model = None
        self.graph = None
        self.engine = None

    # The search.

    def run(self, max_steps=None):
        """Runs (or resumes) the search; returns the hard-masked model.

        Each call starts from `model` again, unless `checkpoint_dir` holds
        a saved state, which it continues.

        Args:
            max_steps: Stop after this many new steps even if the target is
                not reached (with `checkpoint_dir`, a later `run` resumes).

        Raises:
            ValueError: For bad data, or a target below the smallest
                reachable FLOPs fraction.
        """
        self.history, self.ensemble = [], None
        num_classes = int(self.source.outputs[0].shape[-1])
        subsets = self._subsets(num_classes)
        with self.strategy.scope():
            self.model = wrap(self.source, mode="hard")
        self.graph = trace(self.model, warn=False)
        self.graph.freeze_layers(self.ignored_layers)
        counter = FlopsCounter(
            self.graph, include_bn=self.include_bn, include_fc=self.include_fc
        )
        self._counter, self._full = counter, counter.macs(counter.full)
        self._floors = np.array(
            [
                channel_floor(g.size, self.min_channels)
                for g in self.graph.groups
            ]
        )
        self._check_reachable()
        state = self._load_state()
        # Over several replicas, normalize with the statistics of the whole
        # batch, so the search does not depend on the number of replicas.
        synchronized = self.strategy.num_replicas_in_sync > 1 or None
        with batchnorm_settings(self.model, synchronized=synchronized):
            if state is None and self.target < 1.0:
                self._finetune(subsets)
            # Candidates are evaluated in training mode (batch statistics);
            # a momentum of 1 keeps the moving averages as they are.
            with batchnorm_settings(self.model, momentum=1.0):
                self.engine = Engine(
                    self.model,
                    self.graph,
                    subsets.x_val,
                    subsets.y_val,
                    batch_size=self.batch_size,
                    strategy=self.strategy,
                    cache=self.cache,
                    rescale_kernels=self.rescale_kernels,
                    batch_statistics=self.batch_statistics,
                )
                self._search(subsets.y_val, state, max_steps)
        return self.model

    def _search(self, labels, state, max_steps):
        sizes = self.graph.sizes
        prunable = np.array([g.prunable for g in self.graph.groups])
        self._steps, self._fine = rules.step_sizes(
            sizes,
            [len(g.producers) for g in self.graph.groups],
            self.search_step,
        )
        if state is None:
            widths = np.ones(len(sizes))
            ranks = [np.arange(size) for size in sizes]
            start = time.perf_counter()
            logits = self.engine.logits()
            ensemble, members = logits, 1
            self._record(
                0, None, widths, ranks, logits, labels, np.nan, 1, start
            )
        else:
            widths, ranks, ensemble, members = state
            self.engine.set_keep(self._keep(widths, ranks))
        writer = self._summary_writer()
        taken = 0
        while self.history[-1].flops_fraction > self.target and (
            max_steps is None or taken < max_steps
        ):
            taken += 1
            start = time.perf_counter()
            scores = self.engine.importance(ensemble)
            alive = self._keep(widths, ranks)
            ranks = [
                rules.ranks(s, a) if p else r
                for s, a, r, p in zip(scores, alive, ranks, prunable)
            ]
            keep = self._keep(widths, ranks)
            if any(not np.array_equal(k, a) for k, a in zip(keep, alive)):
                # Not expected (masked channels rank last), but then the
                # scored masks and their cached activations are stale.
                self.engine.set_keep(keep)
                self.engine.cache_prefix()
            group, width, logits, objective, tried = self._best_candidate(
                scores, widths, ranks, prunable, ensemble, labels
            )
            widths = widths.copy()
            widths[group] = width
            self.engine.set_keep(self._keep(widths, ranks), [group])
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
        self.ensemble = ensemble
        if self.verbose and len(self.history) == 1:
            log.info(
                f"EKG search: the model already keeps "
                f"{self.history[0].flops_fraction:.1%} <= {self.target:.1%}"
                " of its FLOPs; nothing to prune."
            )

    def _best_candidate(
        self, scores, widths, ranks, prunable, ensemble, labels
    ):
        costs = np.full(len(widths), rules.UNAVAILABLE)
        for group in np.flatnonzero(prunable):
            kept = rules.kept_count(len(ranks[group]), widths[group])
            if kept > self._floors[group]:
                costs[group] = rules.candidate_cost(
                    scores[group], widths[group], self._steps[group]
                )
        if self.variant == "code":
            checked = rules.groups_to_check(costs)
        else:
            checked = costs < rules.UNAVAILABLE
        if not checked.any():
            raise RuntimeError(
                "No group can shrink further, yet the FLOPs fraction is "
                f"{self.history[-1].flops_fraction:.4f} > {self.target}."
            )
        knowledge = _softmax(ensemble)
        current = self._keep(widths, ranks)
        best = None
        for group in np.flatnonzero(checked):
            width = self._candidate_width(group, widths, ranks)
            trial = widths.copy()
            trial[group] = width
            self.engine.set_keep(self._keep(trial, ranks), [group])
            logits = self.engine.logits(group)
            self.engine.set_keep(current, [group])
            objective = float(
                np.mean(
                    _cross_entropy(labels, logits)
                    + _soft_cross_entropy(knowledge, logits)
                )
            )
            if best is None or objective < best[3]:
                best = (group, width, logits, objective)
        return best + (int(checked.sum()),)

    def _candidate_width(self, group, widths, ranks):
        size = self.graph.groups[group].size
        candidate = max(
            round(widths[group] - self._steps[group], 5),
            self._floors[group] / size,
        )

        def fraction_at(width):
            trial = widths.copy()
            trial[group] = width
            return self._fraction(trial, ranks)

        if fraction_at(candidate) < self.target:
            candidate = rules.fine_width(
                candidate,
                self.search_step,
                self._fine[group],
                fraction_at,
                self.target,
            )
        return candidate

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
        return self._counter.macs(self._keep_counts(widths, ranks)) / self._full

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
        self.history.append(
            SearchStep(
                step=step,
                group=None if group is None else int(group),
                widths=np.array(widths),
                ranks=[np.array(r) for r in ranks],
                keep_counts=self._keep_counts(widths, ranks).astype(np.int64),
                flops_fraction=self._fraction(widths, ranks),
                loss=float(np.mean(_cross_entropy(labels, logits))),
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

    def _summary_writer(self):
        if self.tensorboard_dir is None:
            return None
        return tf.summary.create_file_writer(str(self.tensorboard_dir))

    # Set-up.

    def _subsets(self, num_classes):
        subsets = collect_subsets(
            self.data,
            num_classes,
            self.val_per_class,
            self.subset_per_class if self.finetune else 0,
            seed=self.seed,
        )
        if self.val_data is not None:
            whole = collect_subsets(
                self.val_data,
                num_classes,
                val_per_class=np.iinfo(np.int32).max,
                subset_per_class=0,
                seed=self.seed,
            )
            subsets = dataclasses.replace(
                subsets, x_val=whole.x_val, y_val=whole.y_val
            )
        return subsets

    def _finetune(self, subsets):
        if self.finetune and len(subsets.y_subset):
            finetune_one_epoch(
                self.model,
                subsets.x_subset,
                subsets.y_subset,
                batch_size=min(self.batch_size, len(subsets.y_subset)),
                strategy=self.strategy,
                logits=not ends_in_softmax(self.model),
            )
        if self.checkpoint_dir is not None:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            self.model.save_weights(self._path("finetuned.weights.h5"))

    def _check_reachable(self):
        counts = np.array(
            [
                floor if group.prunable else group.size
                for group, floor in zip(self.graph.groups, self._floors)
            ],
            dtype=np.float64,
        )
        smallest = self._counter.macs(counts) / self._full
        if self.target < smallest:
            raise ValueError(
                f"flops={self.target} is below the smallest reachable "
                f"fraction {smallest:.4f} (every prunable group at its "
                f"floor of min_channels={self.min_channels!r}). Received: "
                f"flops={self.target}"
            )

    # Checkpoints.

    def _path(self, name):
        return os.path.join(self.checkpoint_dir, name)

    def _save_state(self, widths, ranks, ensemble, members):
        if self.checkpoint_dir is None:
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
        meta = [
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
        temporary = self._path("state.tmp.npz")
        np.savez(temporary, **arrays)
        os.replace(temporary, self._path("state.npz"))
        with open(self._path("history.json"), "w") as handle:
            json.dump(meta, handle)

    def _load_state(self):
        if self.checkpoint_dir is None or not os.path.exists(
            self._path("state.npz")
        ):
            return None
        self.model.load_weights(self._path("finetuned.weights.h5"))
        arrays = np.load(self._path("state.npz"))
        with open(self._path("history.json")) as handle:
            meta = json.load(handle)
        groups = len(self.graph.groups)
        for i, entry in enumerate(meta):
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
                f"EKG search: resumed after step {meta[-1]['step']} from "
                f"{self.checkpoint_dir}"
            )
        return (
            arrays["widths"],
            ranks,
            arrays["ensemble"],
            int(arrays["members"]),
        )


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _cross_entropy(labels, logits):
    return -_log_softmax(logits)[np.arange(len(labels)), labels]


def _soft_cross_entropy(targets, logits):
    return -(targets * _log_softmax(logits)).sum(axis=-1)
