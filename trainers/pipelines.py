"""The input pipelines of a run, from its data source and settings."""


class Pipelines:
    """Training, ordered and evaluation batches of a run's data source.

    Args:
        config: The `RunConfig` (batch sizes, seed, step cap).
        source: The `DataSource`.
        strategy: The `tf.distribute.Strategy` training runs under.
    """

    def __init__(self, config, source, strategy):
        self.config = config
        self.source = source
        self.strategy = strategy

    def steps_per_epoch(self):
        """Batches per training epoch: the full split, capped by the
        config's `steps_per_epoch`."""
        steps = max(1, self.source.num_train // self.config.batch_size)
        if self.config.steps_per_epoch:
            steps = min(steps, self.config.steps_per_epoch)
        return steps

    def training(self, epoch, with_ids=False, augment=None):
        """One epoch's shuffled, augmented, distributed training batches.

        The order and augmentation draws depend only on the run's seed and
        `epoch`, so a run resumed at an epoch trains on the batches an
        uninterrupted run trains on there.
        """
        config = self.config

        def dataset(input_context):
            return self.source.dataset(
                "train",
                config.batch_size,
                training=True,
                augment=augment,
                with_ids=with_ids,
                seed=epoch_seed(config.seed, epoch),
                input_context=input_context,
            ).repeat()

        return self.strategy.distribute_datasets_from_function(dataset)

    def training_spec(self, with_ids=False):
        """The structure of one replica's training batch."""
        replicas = self.strategy.num_replicas_in_sync
        return self.source.dataset(
            "train",
            max(1, self.config.batch_size // replicas),
            training=True,
            with_ids=with_ids,
        ).element_spec

    def ordered(self, with_ids=False):
        """The training split in order, evaluation preprocessing."""
        return self.source.dataset(
            "train", self.config.eval_batch_size, with_ids=with_ids
        )

    def evaluation(self):
        """The evaluation split."""
        return self.source.dataset("eval", self.config.eval_batch_size)


def epoch_seed(seed, epoch):
    """The data seed of one epoch of a run with `seed`."""
    return seed * 100_003 + epoch
