"""The EKG memory bank: teacher logits for every training sample.

After the search, K interim sub-networks (the teachers, see
`select_teachers`) are run once over the training set and their logits are
stored per sample id (EKG paper, Eq. 10). Fine-tuning then reads the rows
of its batch by the ids the dataset carries, inside the compiled train
step.
"""

import os
import tempfile

import keras
import numpy as np

from ekg_keras import _logging as log
from ekg_keras._backend import tf
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.graph import trace
from ekg_keras.methods.ekg.teachers import select_teachers
from ekg_keras.methods.setup import apply_keep as write_keep
from ekg_keras.training.fitting import check_ids

STORAGE = ("float32", "float16")
#: Logit read back for the classes a top-k bank did not keep: exp(-1e4)
#: is 0, so each teacher's distribution is renormalised over its top k.
TOP_K_FILL = -1e4


class _BankLayout:
    """The shape, storage and owner of a bank, shared by both kinds.

    Rows `i * K + k` hold teacher k's logits for sample i: `values` is
    `(N * K, C)`, or `(N * K, top_k)` beside int32 `indices`.
    """

    def _set_layout(
        self,
        num_samples,
        num_teachers,
        num_classes,
        storage,
        top_k,
        fingerprint,
    ):
        """Validates and stores the layout; returns the `(rows, width)` of
        `values`."""
        for name, value in (
            ("num_samples", num_samples),
            ("num_teachers", num_teachers),
            ("num_classes", num_classes),
        ):
            if int(value) < 1:
                raise ValueError(
                    f"`{name}` should be a positive integer. Received: "
                    f"{name}={value!r}"
                )
        if storage not in STORAGE:
            raise ValueError(
                f"`storage` should be one of {STORAGE}. Received: "
                f"storage={storage!r}"
            )
        if top_k is not None and not 1 <= int(top_k) < int(num_classes):
            raise ValueError(
                f"`top_k` should be None or in [1, {num_classes}) for "
                f"{num_classes} classes. Received: top_k={top_k!r}"
            )
        self.num_samples = int(num_samples)
        self.num_teachers = int(num_teachers)
        self.num_classes = int(num_classes)
        self.storage = storage
        self.top_k = None if top_k is None else int(top_k)
        self.fingerprint = str(fingerprint)
        width = self.num_classes if self.top_k is None else self.top_k
        return self.num_samples * self.num_teachers, width

    @property
    def nbytes(self):
        """Bytes the stored rows take."""
        return bank_bytes(
            self.num_samples,
            self.num_teachers,
            self.num_classes,
            self.storage,
            self.top_k,
        )

    def _layout_config(self):
        return {
            "num_samples": self.num_samples,
            "num_teachers": self.num_teachers,
            "num_classes": self.num_classes,
            "storage": self.storage,
            "top_k": self.top_k,
            "fingerprint": self.fingerprint,
        }


@keras.saving.register_keras_serializable(package="ekg_keras")
class MemoryBank(_BankLayout, keras.layers.Layer):
    """Teacher logits per training sample, as non-trainable weights.

    The logits of teacher k for the sample with id i are row `i * K + k` of
    the `values` weight (shape `(N * K, C)`, i.e. an N x K x C bank laid
    out by rows), so that writing one teacher's
    batch and reading one batch's K teachers are single row scatters and
    gathers, also on a `tf.distribute` mirrored variable (every replica
    holds the bank and reads the rows of its own batch).

    With `top_k`, only the k largest logits of each teacher are stored
    (`values` and their class `indices`), and the others read back as
    `TOP_K_FILL`; meant for 1000 classes, where a full float32 ImageNet bank
    (1,281,167 x 5 x 1000) takes 25.6 GB.

    Args:
        num_samples: N, one more than the largest sample id.
        num_teachers: K.
        num_classes: C.
        storage: "float32" or "float16" (halves the bytes; reads are cast
            back to float32).
        top_k: Keep only this many logits per teacher and sample (None:
            all).
        fingerprint: Identifies the student the bank was built for (see
            `model_fingerprint`); fine-tuning refuses a different one.
        **kwargs: Layer arguments (`name`, ...).
    """

    def __init__(
        self,
        num_samples,
        num_teachers,
        num_classes,
        storage="float32",
        top_k=None,
        fingerprint="",
        **kwargs,
    ):
        super().__init__(**kwargs)
        rows, width = self._set_layout(
            num_samples, num_teachers, num_classes, storage, top_k, fingerprint
        )
        self.values = self.add_weight(
            name="values",
            shape=(rows, width),
            dtype=storage,
            initializer="zeros",
            trainable=False,
            autocast=False,  # `.value` stays the variable (scatter, fp16).
        )
        self.indices = None
        if self.top_k is not None:
            self.indices = self.add_weight(
                name="indices",
                shape=(rows, width),
                dtype="int32",
                initializer="zeros",
                trainable=False,
                autocast=False,
            )
        self.built = True

    def write(self, ids, teacher, logits):
        """Stores one teacher's logits (B x C) for the samples `ids`."""
        rows = tf.cast(ids, tf.int64) * self.num_teachers + teacher
        if self.top_k is None:
            values, indices = logits, None
        else:
            values, indices = tf.math.top_k(logits, k=self.top_k)
        _scatter_rows(self.values, rows, tf.cast(values, self.storage))
        if indices is not None:
            _scatter_rows(self.indices, rows, tf.cast(indices, tf.int32))

    def read(self, ids):
        """Teacher logits of the samples `ids`: float32, B x K x C.

        Raises (in the graph) `InvalidArgumentError` for ids outside
        `[0, num_samples)`.
        """
        ids = tf.cast(ids, tf.int64)
        tf.debugging.assert_non_negative(
            ids, message="Sample ids must be >= 0 to read the memory bank."
        )
        tf.debugging.assert_less(
            ids,
            tf.constant(self.num_samples, tf.int64),
            message=(
                f"Sample ids must be below {self.num_samples}, the number "
                "of samples the memory bank was built for."
            ),
        )
        rows = ids[:, None] * self.num_teachers + tf.range(
            self.num_teachers, dtype=tf.int64
        )
        values = tf.cast(tf.gather(_tensor(self.values), rows), tf.float32)
        if self.top_k is None:
            return values
        indices = tf.gather(_tensor(self.indices), rows)
        spread = tf.one_hot(indices, self.num_classes, dtype=tf.float32)
        kept = tf.reduce_sum(spread, axis=-2) > 0
        scattered = tf.reduce_sum(spread * values[..., None], axis=-2)
        return tf.where(kept, scattered, TOP_K_FILL)

    def call(self, ids):
        return self.read(ids)

    def get_config(self):
        return {**super().get_config(), **self._layout_config()}


def build_memory_bank(
    source,
    data,
    *,
    trajectory=None,
    apply_keep=None,
    num_teachers=5,
    variant="code",
    storage="float32",
    top_k=None,
    num_samples=None,
    placement="auto",
    device_budget=2 * 2**30,
    host_directory=None,
    strategy=None,
    verbose=1,
):
    """Runs the teachers of a trajectory over the training set into a bank.

    The teachers are sub-networks of `trajectory` chosen by
    `select_teachers` from their losses (the last entry, the result, is the
    student). Each is the masked model with that entry's keep masks; it
    runs over `data` once in training mode (batch statistics, as in the
    search; the moving statistics are not changed). A device bank is filled
    by one compiled loop per teacher that writes each batch's logits to the
    rows of its sample ids; a host bank receives each batch's logits from a
    compiled forward pass. The model's masks are the trajectory's last
    entry afterwards.

    Args:
        source: The masked model whose sub-networks the trajectory holds,
            or a finished `PruningMethod` (e.g. an `EKGSearch` after
            `run`), whose model, trajectory and mask writer are used.
        data: `tf.data.Dataset` of `({"image": x, "id": id}, label)`
            batches of the training set with inference preprocessing (no
            augmentation), e.g. `ekg_keras.data.digits(with_ids=True,
            shuffle=False).train`. Order does not matter: rows follow ids.
        trajectory: The `Trajectory` (required with a model `source`).
        apply_keep: Writes a keep configuration into the model (default:
            the graph's layer masks; a method passes its own, e.g. EKG's
            kernel rescale).
        num_teachers: K (5 in the reference).
        variant: Teacher selection, "code" or "poster".
        storage: See `MemoryBank`.
        top_k: See `MemoryBank`.
        num_samples: N; by default one more than the largest id in `data`
            (one pass over the ids).
        placement: "device" (a `MemoryBank`, read in the train step),
            "host" (a `HostMemoryBank`, streamed by `tf.data`), or "auto":
            the device when the bank takes at most `device_budget` bytes.
        device_budget: Bytes the bank may take on the device under "auto".
        host_directory: Where a host bank keeps its files (default: a new
            temporary directory, logged).
        strategy: `tf.distribute` strategy a device bank is created under
            (default: the method's, or the one in scope).
        verbose: 1 logs the bank's size and placement.

    Returns:
        `(bank, teachers)`: the bank and the trajectory indices of its
        teachers, lowest loss first.

    Raises:
        ValueError: Without a trajectory (a search that has not run), for
            `data` without ids or an unknown `placement`.
    """
    if hasattr(source, "trajectory") and callable(source.trajectory):
        trajectory = source.trajectory()
        apply_keep = apply_keep or source.apply_keep
        strategy = strategy or source.strategy
        model = source.model
    else:
        model = source
    if trajectory is None or len(trajectory) < 1:
        raise ValueError(
            "build_memory_bank needs the sub-networks of a finished search: "
            "call search.run() first, or pass `trajectory=`."
        )
    if placement not in ("auto", "device", "host"):
        raise ValueError(
            "`placement` should be 'auto', 'device' or 'host'. Received: "
            f"placement={placement!r}"
        )
    check_ids(data)
    if apply_keep is None:
        graph = trace(model, warn=False)

        def apply_keep(keep):
            write_keep(model, graph, keep)

    teachers = select_teachers(trajectory.losses, num_teachers, variant)
    classes = int(model.outputs[0].shape[-1])
    if num_samples is None:
        num_samples = 1 + int(
            data.map(lambda features, *_: tf.reduce_max(features["id"]))
            .reduce(tf.constant(-1, tf.int64), tf.maximum)
            .numpy()
        )
    size = bank_bytes(num_samples, len(teachers), classes, storage, top_k)
    on_host = placement == "host" or (
        placement == "auto" and size > device_budget
    )
    shape = dict(
        num_samples=num_samples,
        num_teachers=len(teachers),
        num_classes=classes,
        storage=storage,
        top_k=top_k,
        fingerprint=model_fingerprint(model),
    )
    if on_host:
        directory = host_directory or tempfile.mkdtemp(prefix="ekg_bank_")
        bank = HostMemoryBank(directory=directory, **shape)
        forward = tf.function(lambda x: model(x, training=True))

        def fill(teacher):
            for features, *_ in data:
                logits = forward(features["image"]).numpy()
                bank.write(features["id"].numpy(), teacher, logits)

    else:
        with (strategy or tf.distribute.get_strategy()).scope():
            bank = MemoryBank(**shape)

        @tf.function
        def fill_in_graph(dataset, teacher):
            for features, *_ in dataset:
                logits = model(features["image"], training=True)
                bank.write(features["id"], teacher, logits)

        def fill(teacher):
            fill_in_graph(data, tf.constant(teacher, tf.int64))

    with batchnorm_settings(model, momentum=1.0):
        for k, index in enumerate(teachers):
            apply_keep(trajectory.keep_masks[index])
            fill(k)
    apply_keep(trajectory.keep_masks[-1])
    if on_host:
        bank.flush()
    if verbose:
        report(bank, device_budget if placement == "auto" else None)
    return bank, teachers


@keras.saving.register_keras_serializable(package="ekg_keras")
class HostMemoryBank(_BankLayout):
    """A memory bank in host memory, streamed by `tf.data` beside images.

    For banks too large for the accelerator (a float32 ImageNet bank is
    25.6 GB). The rows live in `.npy` files under `directory`, opened as
    memory maps, so they need not fit in RAM either; `attach(dataset)` adds
    each batch's rows to its features as `"teacher_logits"`, which
    `EKGFineTuning` reads instead of a device bank. Same layout and
    arguments as `MemoryBank`, plus the directory.
    """

    def __init__(
        self,
        num_samples,
        num_teachers,
        num_classes,
        directory,
        storage="float32",
        top_k=None,
        fingerprint="",
        mode="r+",
    ):
        rows, width = self._set_layout(
            num_samples, num_teachers, num_classes, storage, top_k, fingerprint
        )
        self.directory = str(directory)
        self.values = _memmap(
            self.directory, "values.npy", (rows, width), storage, mode
        )
        self.indices = None
        if self.top_k is not None:
            self.indices = _memmap(
                self.directory, "indices.npy", (rows, width), "int32", mode
            )

    def write(self, ids, teacher, logits):
        """Stores one teacher's logits (B x C) for the samples `ids`."""
        rows = np.asarray(ids, np.int64) * self.num_teachers + int(teacher)
        logits = np.asarray(logits, np.float32)
        if self.top_k is None:
            self.values[rows] = logits.astype(self.storage)
            return
        order = np.argsort(-logits, axis=-1, kind="stable")[:, : self.top_k]
        self.indices[rows] = order
        self.values[rows] = np.take_along_axis(logits, order, -1).astype(
            self.storage
        )

    def read(self, ids):
        """Teacher logits of the samples `ids`: float32 NumPy, B x K x C.

        Raises:
            ValueError: For ids outside `[0, num_samples)`.
        """
        ids = np.asarray(ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise ValueError(
                f"Sample ids must be in [0, {self.num_samples}), the samples "
                f"the memory bank was built for. Received ids from "
                f"{ids.min()} to {ids.max()}."
            )
        rows = ids[:, None] * self.num_teachers + np.arange(self.num_teachers)
        values = np.asarray(self.values[rows], np.float32)
        if self.top_k is None:
            return values
        full = np.full(rows.shape + (self.num_classes,), TOP_K_FILL, "f4")
        np.put_along_axis(full, np.asarray(self.indices[rows]), values, -1)
        return full

    def attach(self, dataset):
        """`dataset` with each batch's rows added as `"teacher_logits"`."""
        check_ids(dataset)
        shape = (self.num_teachers, self.num_classes)

        def lookup(features, *rest):
            rows = tf.numpy_function(self.read, [features["id"]], tf.float32)
            rows.set_shape(features["id"].shape + shape)
            return ({**features, "teacher_logits": rows}, *rest)

        return dataset.map(lookup, num_parallel_calls=tf.data.AUTOTUNE)

    def flush(self):
        """Writes the memory maps to disk."""
        self.values.flush()
        if self.indices is not None:
            self.indices.flush()

    def get_config(self):
        return {**self._layout_config(), "directory": self.directory}

    @classmethod
    def from_config(cls, config):
        """Reopens the bank's files read-only."""
        return cls(**config, mode="r")


def _memmap(directory, name, shape, dtype, mode):
    path = os.path.join(directory, name)
    if mode == "r+" and not os.path.exists(path):
        os.makedirs(directory, exist_ok=True)
        return np.lib.format.open_memmap(
            path, mode="w+", dtype=dtype, shape=shape
        )
    array = np.load(path, mmap_mode=mode)
    if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        raise ValueError(
            f"{path} holds a {array.dtype} array of shape {array.shape}; "
            f"expected {np.dtype(dtype)} {tuple(shape)}."
        )
    return array


def bank_bytes(num_samples, num_teachers, num_classes, storage, top_k=None):
    """Bytes of a memory bank of this shape and storage mode."""
    width = num_classes if top_k is None else top_k
    per_value = np.dtype(storage).itemsize + (0 if top_k is None else 4)
    return num_samples * num_teachers * width * per_value


def model_fingerprint(model, graph=None):
    """A string naming a model's output classes and channel-group widths.

    A bank built for one student is meaningless for another; comparing
    fingerprints catches a bank reused across models or class counts.
    """
    graph = graph or trace(model, warn=False)
    classes = int(model.outputs[0].shape[-1])
    return f"classes={classes};groups=" + ",".join(
        str(size) for size in graph.sizes
    )


def report(bank, device_budget=None):
    """Logs the bank's size and where it lives."""
    where = (
        f"on the host in {bank.directory}, streamed beside the images"
        if isinstance(bank, HostMemoryBank)
        else "on the device"
    )
    if device_budget is not None and isinstance(bank, HostMemoryBank):
        where += (
            f" (more than the device budget {device_budget / 2**20:.0f} MiB)"
        )
    log.info(
        f"ekg_keras memory bank: {bank.num_samples} samples x "
        f"{bank.num_teachers} teachers x {bank.num_classes} classes, "
        f"{bank.storage}"
        + (f", top {bank.top_k}" if bank.top_k else "")
        + f": {bank.nbytes / 2**20:.1f} MiB {where}"
    )


def _tensor(variable):
    return variable.value if hasattr(variable, "value") else variable


def _scatter_rows(variable, rows, updates):
    _tensor(variable).scatter_update(tf.IndexedSlices(updates, rows))
