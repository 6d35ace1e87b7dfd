"""convert(): swap every MixedPrecisionEmbedding for its FixedBitEmbedding.

Functional and Sequential models (nested ones too) are cloned: the result
is a new model whose other layers are the original layer objects (their
weights are shared, not copied). Subclassed models, TFRS models included,
cannot be cloned generically, so their embedding attributes are replaced
in place and the same model object is returned.
"""

from keras_mpe import _compat
from keras_mpe import storage
from keras_mpe.embedding import MixedPrecisionEmbedding
from keras_mpe.fixed_bit import FixedBitEmbedding
from keras_mpe.model_layers import find_layers

keras = _compat.keras


def _convert_layer(layer, layout="packed"):
    if isinstance(layer, MixedPrecisionEmbedding):
        return FixedBitEmbedding.from_searched(layer, layout=layout)
    if _compat.is_graph_model(layer):
        return _compat.clone_model(layer, lambda x: _convert_layer(x, layout))
    if isinstance(layer, keras.Model) or _has_layer_attributes(layer):
        for name, value in list(vars(layer).items()):
            if not isinstance(value, keras.layers.Layer):
                continue
            converted = _convert_layer(value, layout)
            if converted is not value:
                _compat.replace_sublayer(layer, name, converted)
    return layer


def _has_layer_attributes(layer) -> bool:
    return any(isinstance(v, keras.layers.Layer) for v in vars(layer).values())


def convert(model, layout="packed"):
    """Converts a searched and retrained model for serving.

    Every `MixedPrecisionEmbedding` (which must be in its FIXED phase) is
    replaced by a `FixedBitEmbedding` with equal outputs; the float tables
    are not part of the result.

    Example:

    ```python
    serving_model = keras_mpe.convert(model)  # the smallest
    fast_model = keras_mpe.convert(model, layout="bytes")  # the fastest
    keras_mpe.export_saved_model(serving_model, "models/ctr/1")
    ```

    Args:
        model: A Keras model holding MixedPrecisionEmbedding layers.
        layout: "packed" (the default: codes packed at each row's
            bit-width, the smallest) or "bytes" (a byte per code and an
            int32 per id: larger, faster to serve). See
            `FixedBitEmbedding`.

    Returns:
        The serving model: a new model for functional and Sequential
        models, `model` itself (changed in place) for subclassed models.
    """
    storage.code_layout(layout)  # a ValueError naming the valid layouts
    layers = find_layers(model)
    if not layers:
        raise ValueError(
            f"convert: model '{model.name}' has no MixedPrecisionEmbedding."
        )
    unfinished = [
        f"{x.name} ({x.phase.name})" for x in layers if x.phase.name != "FIXED"
    ]
    if unfinished:
        raise ValueError(
            "convert: every MixedPrecisionEmbedding must have chosen its "
            "precisions (FIXED phase, after MPECallback's selection). Still "
            f"searching or never searched: {', '.join(unfinished)}"
        )
    return _convert_layer(model, layout)
