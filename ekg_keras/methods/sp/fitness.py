"""What a stage's genes cost and how well they distil (SP's EA fitness).

A gene of stage `i` is one index per prunable group of the stage into the
group's count table (`StageSuperNet.count_tables`). Its *cost* is the MACs
of the stage's layers with those counts while the stage's input keeps its
full width (as the stage sees it in the search: the full network's input),
an explicit function of the counts (`FlopsCounter.terms`), so rejection
sampling prices thousands of genes at once. Its *loss* is the stage's
distillation loss on the held-out split (the full network's stage inputs
and outputs computed once and cached), scored through the shared
`SubnetworkEvaluator` on a stage model `[stage input, target] -> per-sample
loss` whose masks the evaluator writes, a population per call, with each
gene's loss kept so no gene is scored twice.
"""

import time

import keras
import numpy as np

from ekg_keras.evaluation import SubnetworkEvaluator
from ekg_keras.flops import FlopsCounter
from ekg_keras.graph import trace
from ekg_keras.numerics import check_finite


class StageFitness:
    """Cost and loss of the genes of one stage.

    Args:
        supernet: The trained `StageSuperNet`.
        index: The stage.
        inputs: The full network's stage inputs on the validation split.
        targets: Its stage outputs there.
        scope: The `ekg_keras.PruningScope` whose FLOPs convention
            (`include_bn`, `include_fc`) the cost follows.
        batch_size: Evaluation batch size (batch statistics over it).
        strategy: `tf.distribute` strategy of the evaluation.

    Attributes:
        groups: The network's group ids this stage's genes choose.
        tables: Their count tables.
        seconds: Wall time spent scoring.
    """

    def __init__(
        self,
        supernet,
        index,
        inputs,
        targets,
        *,
        scope,
        batch_size=256,
        strategy=None,
    ):
        self.index = index
        self.stage = supernet.stages[index]
        self.groups = list(self.stage.groups)
        self.tables = [supernet.count_tables[g] for g in self.groups]
        self._ranks = supernet.ranks()
        self._full = supernet.full_counts()
        network_graph = supernet.graph
        model = _stage_model(supernet, index)
        self._graph = trace(model, warn=False)
        self._keep_map = _channel_ranks(self._graph, network_graph, self._ranks)
        stage_graph = trace(self.stage.functional, warn=False)
        self._cost_map = _channel_ranks(stage_graph, network_graph, self._ranks)
        self._cost_sizes = stage_graph.sizes
        self._terms = FlopsCounter(
            stage_graph,
            include_bn=scope.include_bn,
            include_fc=scope.include_fc,
        ).terms("macs")
        self.evaluator = SubnetworkEvaluator(
            model,
            self._graph,
            [inputs, targets],
            batch_size=batch_size,
            strategy=strategy,
            cache=False,
            batch_statistics=True,
        )
        self.losses_by_gene = {}
        self.seconds = 0.0

    # Genes.

    @property
    def num_genes(self):
        """Positions of a gene (the stage's prunable groups)."""
        return len(self.groups)

    @property
    def table_sizes(self):
        """Number of counts each position may take."""
        return np.array([len(t) for t in self.tables], dtype=np.int64)

    def counts(self, genes):
        """The network's keep counts of genes (other groups at full width).

        Args:
            genes: (n, positions) int array of table indices.

        Returns:
            (n, groups) int64 array.
        """
        genes = np.atleast_2d(np.asarray(genes, dtype=np.int64))
        counts = np.tile(self._full, (len(genes), 1))
        for position, (group, table) in enumerate(
            zip(self.groups, self.tables)
        ):
            counts[:, group] = table[genes[:, position]]
        return counts

    def costs(self, genes):
        """MACs of the stage for each gene (its input at full width)."""
        counts = _stage_counts(
            self._cost_map, self._cost_sizes, self.counts(genes)
        )
        terms = self._terms
        live_a = counts @ terms.a_weights.T + terms.a_fixed
        live_b = counts @ terms.b_weights.T + terms.b_fixed
        return (live_a * live_b) @ terms.coef + terms.constant

    def cost_range(self):
        """MACs of the stage at its smallest and at its full widths."""
        low = np.zeros(self.num_genes, dtype=np.int64)
        high = self.table_sizes - 1
        return float(self.costs(low)[0]), float(self.costs(high)[0])

    # Losses.

    def losses(self, genes):
        """Distillation loss of each gene on the validation split.

        Genes scored before are not scored again.

        Raises:
            NonFiniteError: If a loss is NaN or infinite.
        """
        genes = [tuple(int(v) for v in gene) for gene in genes]
        new = list(
            dict.fromkeys(g for g in genes if g not in self.losses_by_gene)
        )
        if new:
            start = time.perf_counter()
            keeps = [self._keep(counts) for counts in self.counts(new)]
            for gene, values in zip(new, self.evaluator.evaluate(keeps)):
                loss = float(np.mean(values))
                check_finite(
                    loss,
                    "The stage loss",
                    f"SP stage {self.index}, gene {list(gene)}",
                )
                self.losses_by_gene[gene] = loss
            self.seconds += time.perf_counter() - start
        return np.array([self.losses_by_gene[g] for g in genes])

    def _keep(self, counts):
        """Keep masks of the stage model's groups for network counts."""
        keep = []
        for group, (source, ranks) in zip(self._graph.groups, self._keep_map):
            if source < 0 or not group.prunable:
                keep.append(np.ones(group.size, dtype=bool))
            else:
                keep.append(ranks < counts[source])
        return keep


def _stage_model(supernet, index):
    """`[stage input, target] -> per-sample distillation loss`."""
    stage = supernet.stages[index]
    target = keras.Input(
        batch_shape=stage.output.shape, name=f"sp_target_{index}"
    )
    output = stage.output
    adapter = supernet.adapters[index]
    if adapter is not None:
        output = adapter(output)
    error = supernet.stage_error(index, output, target)
    return keras.Model(
        [stage.input, target],
        keras.ops.expand_dims(error, -1),
        name=f"sp_stage_{index}_loss",
    )


def _channel_ranks(graph, network_graph, ranks):
    """Per group of `graph` (a stage's), the network group its channels
    belong to and each channel's rank there (`(-1, None)` for groups that
    are not the network's)."""
    mapped = {}
    for record in graph.maskable_layers():
        outer = network_graph.layers.get(id(record.layer))
        if outer is None:
            continue
        inner_map, outer_map = record.outputs[0], outer.outputs[0]
        for channel in range(len(inner_map)):
            group = int(inner_map.group[channel])
            source = int(outer_map.group[channel])
            if group < 0 or source < 0:
                continue
            entry = mapped.setdefault(
                group, (source, np.zeros(graph.groups[group].size, np.int64))
            )
            if entry[0] != source:
                raise ValueError(
                    f"Stage group {group} spans network groups {entry[0]} "
                    f"and {source}; SP cannot search it."
                )
            index = int(outer_map.index[channel])
            entry[1][int(inner_map.index[channel])] = ranks[source][index]
    return [mapped.get(g.id, (-1, None)) for g in graph.groups]


def _stage_counts(channel_ranks, sizes, counts):
    """Keep counts of a stage graph's groups (of `sizes`) from the
    network's counts: a group keeps its channels ranked below the count of
    the network group they belong to; other groups keep everything."""
    result = np.tile(np.asarray(sizes, np.float64), (len(counts), 1))
    for g, (source, ranks) in enumerate(channel_ranks):
        if source >= 0:
            result[:, g] = np.searchsorted(
                np.sort(ranks), counts[:, source], "left"
            )
    return result
