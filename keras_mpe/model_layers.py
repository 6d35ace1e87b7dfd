"""find_layers(): the keras_mpe layers inside any Keras model.

Functional, Sequential and subclassed models (TFRS models included) hold
their layers differently; `find_layers` walks all of them, nested models
and layers kept as attributes too, so the callback, `convert`,
`export_saved_model` and `compression_report` see the same layers.
"""

from keras_mpe import _compat
from keras_mpe.embedding import MixedPrecisionEmbedding


def find_layers(model, layer_type=MixedPrecisionEmbedding) -> list:
    """Every layer of `layer_type` inside `model`, each once, in order.

    Example:

    ```python
    for layer in keras_mpe.find_layers(model):
        print(layer.name, layer.bits_per_group())
    ```

    Args:
        model: A Keras model or layer.
        layer_type: A layer class (or tuple of classes) to look for;
            `MixedPrecisionEmbedding` by default.

    Returns:
        A list of layers, outermost first.
    """
    found = []
    for layer in _compat.sublayers(model):
        if isinstance(layer, layer_type) and layer not in found:
            found.append(layer)
    return found
