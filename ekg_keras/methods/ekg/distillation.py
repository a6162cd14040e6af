"""EKG fine-tuning: two views, cross-entropy and memory-bank distillation.

The fine-tuning phase of the EKG paper (Lee and Song, ECCV 2022, Alg. 1,
lines 13-16, Eq. 12) as the EKG reference code implements it.
`keras.distillation` (Keras >= 3.12) offers `Distiller`, which runs a
teacher model on every batch, and `LogitsDistillation`, a `T^2`-scaled KL
divergence between clipped probabilities; EKG reads stored logits of
several teachers, filters them per batch and scales the KL divergence by
`T` (not `T^2`) from log-softmax, so the loss is written here.
"""

import copy
import functools

import keras

from ekg_keras._api import ekg_export
from ekg_keras._backend import tf
from ekg_keras.methods.ekg.memory_bank import HostMemoryBank
from ekg_keras.methods.ekg.memory_bank import MemoryBank
from ekg_keras.methods.ekg.memory_bank import model_fingerprint
from ekg_keras.training.augment import flip
from ekg_keras.training.augment import pad_crop_flip
from ekg_keras.training.fitting import check_ids

AUGMENTATIONS = {"pad_crop_flip": pad_crop_flip, "flip": flip}
TEACHER_FILTERS = ("code", "poster")


def kl_divergence(teacher, student, temperature):
    """`T * KL(softmax(teacher/T) || softmax(student/T))` per sample."""
    t = tf.nn.log_softmax(teacher / temperature, axis=-1)
    s = tf.nn.log_softmax(student / temperature, axis=-1)
    return temperature * tf.reduce_sum(tf.exp(t) * (t - s), axis=-1)


def teacher_target(memory, student, labels, temperature, rule="code"):
    """The filtered average of the teachers' logits (the EKG paper's M-bar).

    * `rule="code"`: teacher k counts when its divergence from the top
      teacher (k = 0), summed over the batch, is below the student's (the
      mean of its two views).
    * `rule="poster"`: teacher k counts when its cross-entropy on the batch
      is at most the student's.

    The batch sums are taken over all replicas, so the choice does not
    depend on how a batch is split. Teacher 0 counts whenever the student
    differs from it; when no teacher counts (a student equal to the top
    teacher), the target is all zeros, as in the reference.

    Args:
        memory: Teacher logits, (B, K, C).
        student: The student's logits (mean of the views), (B, C).
        labels: Integer labels, (B,).
        temperature: T.
        rule: "code" or "poster".

    Returns:
        `(target, used)`: target logits (B, C) and the number of teachers
        averaged.
    """
    teachers = tf.transpose(memory, [1, 0, 2])  # (K, B, C)
    if rule == "code":
        top = memory[:, 0]
        student_score = tf.reduce_sum(kl_divergence(top, student, temperature))
        teacher_scores = tf.reduce_sum(
            kl_divergence(top[None], teachers, temperature), axis=-1
        )
    else:
        student_score = tf.reduce_sum(_cross_entropy(labels, student))
        teacher_scores = tf.reduce_sum(
            _cross_entropy(labels[None], teachers), axis=-1
        )
    student_score, teacher_scores = _sum_over_replicas(
        student_score, teacher_scores
    )
    if rule == "code":
        chosen = teacher_scores < student_score
    else:
        chosen = teacher_scores <= student_score
    weights = tf.cast(chosen, memory.dtype)
    used = tf.reduce_sum(weights)
    target = tf.einsum("k,bkc->bc", weights, memory) / tf.maximum(used, 1.0)
    return target, used


@ekg_export
class EKGFineTuning(keras.Model):
    """Fine-tunes a pruned student with ensemble knowledge (EKG Alg. 1).

    Each training step draws two augmented views of the batch, reads the K
    teachers' logits of its samples from the memory bank by the ids the
    dataset carries, and minimises

    `1/2 * mean over samples and views [CE(y, z_v) + T KL(t || z_v)]`

    where `t` is the average of the teachers kept by `teacher_filter`. Use
    it like any Keras model: `compile(optimizer=...)` (no loss: the step
    brings its own), `fit(data)` with `({"image": x, "id": id}, label)`
    batches, callbacks, checkpoints, `tf.distribute` strategies.
    Evaluation and `predict` run the student on the images alone.

    Args:
        student: The pruned (masked or slim) Keras model, logits out.
        bank: A `MemoryBank` (read in the step) or `HostMemoryBank`
            (streamed with the data) built for this student.
        temperature: T; defaults to 4, or 10 for 1000 classes or more.
        teacher_filter: "code" (divergence from the top teacher, the
            reference) or "poster" (teachers with a lower loss).
        augment: Per-sample augmentation `(images, ids, step, view) ->
            images`, or a name: "pad_crop_flip" (default, CIFAR) or "flip"
            (inputs already cropped by the pipeline, e.g. ImageNet); None
            uses the images as they are for both views.
        seed: Seed of the default augmentation.
        **kwargs: `keras.Model` arguments.

    Raises:
        ValueError: If the bank was built for another model or class count.
    """

    # The network it trains (see `ekg_keras.training.inner_model`).
    inner_model_attribute = "student"

    def __init__(
        self,
        student,
        bank,
        temperature=None,
        teacher_filter="code",
        augment="pad_crop_flip",
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if teacher_filter not in TEACHER_FILTERS:
            raise ValueError(
                f"`teacher_filter` should be one of {TEACHER_FILTERS}. "
                f"Received: teacher_filter={teacher_filter!r}"
            )
        if not isinstance(bank, (MemoryBank, HostMemoryBank)):
            raise ValueError(
                "`bank` should be an ekg_keras MemoryBank or HostMemoryBank "
                f"(see build_memory_bank). Received: {type(bank)}"
            )
        fingerprint = model_fingerprint(student)
        if bank.fingerprint and bank.fingerprint != fingerprint:
            raise ValueError(
                "The memory bank was built for another model: bank "
                f"{bank.fingerprint!r}, student {fingerprint!r}."
            )
        classes = int(student.outputs[0].shape[-1])
        if classes != bank.num_classes:
            raise ValueError(
                f"The memory bank holds {bank.num_classes} classes, the "
                f"student outputs {classes}."
            )
        self.student = student
        self.bank = bank
        self.temperature = float(
            temperature or (4.0 if classes < 1000 else 10.0)
        )
        self.teacher_filter = teacher_filter
        self.seed = int(seed)
        self._augment_name = augment if isinstance(augment, str) else None
        if isinstance(augment, str) and augment in AUGMENTATIONS:
            augment = functools.partial(AUGMENTATIONS[augment], seed=self.seed)
        elif augment is not None and not callable(augment):
            raise ValueError(
                f"`augment` should be one of {sorted(AUGMENTATIONS)}, a "
                f"callable or None. Received: augment={augment!r}"
            )
        self.augment = augment
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.distillation_tracker = keras.metrics.Mean(name="distillation")
        self.teachers_tracker = keras.metrics.Mean(name="teachers")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="accuracy"
        )
        # The student and the bank own every weight and exist already, so
        # checkpoint callbacks (BackupAndRestore) need no first batch.
        self.built = True

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.distillation_tracker,
            self.teachers_tracker,
            self.accuracy_tracker,
        ]

    def call(self, inputs, training=False):
        images = inputs["image"] if isinstance(inputs, dict) else inputs
        return self.student(images, training=training)

    def compute_objective(self, features, labels, step, training=True):
        """The fine-tuning loss of one batch and its parts (no metrics).

        Returns:
            `(loss, logits_of_view_1, distillation, teachers_used)`, where
            `loss` is the batch mean (not yet divided over replicas).
        """
        images, ids = features["image"], features["id"]
        if "teacher_logits" in features:  # A host bank, streamed.
            memory = tf.cast(features["teacher_logits"], tf.float32)
        else:
            memory = self.bank.read(ids)
        if self.augment is None:
            views = [images, images]
        else:
            views = [self.augment(images, ids, step, view) for view in (0, 1)]
        logits = [self.student(v, training=training) for v in views]
        target, used = teacher_target(
            memory,
            tf.stop_gradient((logits[0] + logits[1]) / 2),
            labels,
            self.temperature,
            self.teacher_filter,
        )
        target = tf.stop_gradient(target)
        distillation = [
            kl_divergence(target, z, self.temperature) for z in logits
        ]
        per_sample = 0.5 * sum(
            _cross_entropy(labels, z) + d for z, d in zip(logits, distillation)
        )
        loss = tf.reduce_mean(per_sample)
        if self.student.losses:
            loss += tf.add_n(self.student.losses)
        return (
            loss,
            logits[0],
            tf.reduce_mean(0.5 * (distillation[0] + distillation[1])),
            used,
        )

    def train_step(self, data):
        features, labels = data[0], data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, logits, distillation, used = self.compute_objective(
                features, labels, self.optimizer.iterations
            )
            scaled = loss / replicas
        variables = self.student.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.loss_tracker.update_state(loss)
        self.distillation_tracker.update_state(distillation)
        self.teachers_tracker.update_state(used)
        self.accuracy_tracker.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        features, labels = data[0], data[1]
        logits = self(features, training=False)
        loss = tf.reduce_mean(_cross_entropy(labels, logits))
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(labels, logits)
        return {
            "loss": self.loss_tracker.result(),
            "accuracy": self.accuracy_tracker.result(),
        }

    def fit(self, x=None, *args, **kwargs):
        """`keras.Model.fit`, after checking that `x` carries sample ids.

        With a `HostMemoryBank`, the bank's rows are attached to `x` here.
        """
        check_ids(x)
        if isinstance(self.bank, HostMemoryBank):
            x = self.bank.attach(x)
        return super().fit(x, *args, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "bank": keras.saving.serialize_keras_object(self.bank),
            "temperature": self.temperature,
            "teacher_filter": self.teacher_filter,
            "augment": self._augment_name,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Deserialising consumes the dicts.
        config["student"] = keras.saving.deserialize_keras_object(
            config["student"]
        )
        config["bank"] = keras.saving.deserialize_keras_object(config["bank"])
        return cls(**config)


def _cross_entropy(labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(
            tf.broadcast_to(labels, tf.shape(logits)[:-1]), tf.int32
        ),
        logits=logits,
    )


def _sum_over_replicas(*values):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return tuple(
        context.all_reduce(tf.distribute.ReduceOp.SUM, v) for v in values
    )
