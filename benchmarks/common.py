"""Training and evaluation helpers shared by the benchmark scripts (not
part of the library): the baseline recipe on the embedded digits, test
accuracy, and which fine-tuners a comparison runs.

Import `_timing` first (it silences TensorFlow and puts the repository on
the path); these helpers import Keras and `ekg_keras` when called.
"""

#: The fine-tuning every method gets: the same budget on the `Fitter`'s
#: schedule, so that methods are compared on equal terms.
COMMON_FINETUNER = "plain"

#: Run settings the fine-tuners take their options from
#: (`FineTuner.options_from`): quiet, and no augmentation of the two views
#: (the digits are small and centred; the trainers' digits source uses
#: none either).
FINETUNE_SETTINGS = {"verbose": 0, "views_augment": None}


def train(name, data, epochs):
    """A model of `ekg_keras.models` named `name`, seeded, trained on
    `data` by `fit_digits`."""
    import keras

    import ekg_keras

    keras.utils.set_random_seed(0)
    model = getattr(ekg_keras.models, name)(input_shape=data.input_shape)
    return fit_digits(model, data, epochs)


def fit_digits(model, data, epochs):
    """Trains `model` on `data.train` (SGD 0.1 cosine, Nesterov, weight
    decay 5e-4: the benchmarks' baseline recipe); returns it."""
    import keras

    steps = epochs * len(data.train)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.1, steps),
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data.train, epochs=epochs, verbose=0)
    return model


def accuracy(model, data, batch_size=256):
    """Top-1 accuracy on the test split, in inference mode.

    Eager calls in slices: `predict` would trace a function per model and
    size.
    """
    import numpy as np

    x = data.x_test
    logits = np.concatenate(
        [
            np.asarray(model(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
    )
    return float(np.mean(logits.argmax(-1) == data.y_test))


def compared_finetuners(method):
    """The fine-tuners a comparison runs after `method`, from the registry.

    The common one (`COMMON_FINETUNER`), and, if the method left the
    sub-networks it passed through, every registered fine-tuner that
    learns from them (`needs_trajectory`, e.g. EKG's distillation). Others
    (a cosine schedule, training from scratch) change the schedule or the
    start rather than what is learned, so they are left out.
    """
    from ekg_keras.training import finetuners

    names = [COMMON_FINETUNER]
    if method.trajectory() is not None:
        names += [
            name
            for name in finetuners.names()
            if finetuners.get(name).needs_trajectory
        ]
    return names
