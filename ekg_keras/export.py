"""Export a pruned model as a TensorFlow SavedModel."""

from ekg_keras.layers import prunable_layers
from ekg_keras.slim import slim


def export(model, path, keras_path=None):
    """Writes `model` as a TF SavedModel, slimming it first if it is masked.

    A model with prunable layers is slimmed (`ekg_keras.slim`), so the
    SavedModel holds the small dense network, which serves with the same
    outputs. `tf.saved_model.load(path).serve(x)` runs it.

    Args:
        model: A Keras model, masked or plain.
        path: Directory for the SavedModel.
        keras_path: Optional path of a `.keras` file to save beside it.

    Returns:
        The exported (slim) model.
    """
    if prunable_layers(model):
        model = slim(model)
    model.export(str(path), format="tf_saved_model", verbose=False)
    if keras_path is not None:
        model.save(str(keras_path))
    return model
