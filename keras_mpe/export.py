"""export_saved_model(): a SavedModel that stock TensorFlow Serving loads.

The model is wrapped in a plain `tf.Module` that holds the model's
underlying `tf.Variable`s and one `tf.function` with an explicit input
signature, saved as the `serving_default` signature. This avoids the
Keras 3 export pitfalls (every variable written twice by `model.export`;
`tf.saved_model.save(model)` failing in the C++ session loader) and gives
the same layout in both Keras modes: `saved_model.pb` + `variables/`, with
the tables as variables, never graph constants.
"""

import os

import tensorflow as tf

from keras_mpe import _compat
from keras_mpe.model_layers import find_layers


def input_signature(model) -> dict:
    """Named `tf.TensorSpec`s of a functional model's inputs."""
    inputs = model.input
    if isinstance(inputs, dict):
        named = inputs
    else:
        named = {
            tensor.name.split(":")[0]: tensor
            for tensor in tf.nest.flatten(inputs)
        }
    return {
        name: tf.TensorSpec(tensor.shape, tensor.dtype, name=name)
        for name, tensor in named.items()
    }


def export_saved_model(
    model,
    path,
    signature=None,
    jit_compile: bool = False,
    allow_fake_quant: bool = False,
    overwrite: bool = False,
) -> str:
    """Writes `model` as a TF Serving SavedModel at `path`.

    Example:

    ```python
    keras_mpe.export_saved_model(serving_model, "models/ctr/1")
    # tensorflow_model_server --model_name=ctr --model_base_path=$PWD/models/ctr
    ```

    Args:
        model: A Keras model, usually the result of `keras_mpe.convert`.
        path: String. The version folder (`<base>/<model name>/<version>`).
        signature: Dict of name -> `tf.TensorSpec`, or None to take it from
            a functional model's inputs. Required for subclassed models.
        jit_compile: Boolean. Compile the serving function with XLA (TF
            Serving's XLA on CPU is experimental; off by default).
        allow_fake_quant: Boolean. Export a model that still holds
            MixedPrecisionEmbedding layers (float tables, fake quantized).
        overwrite: Boolean. Replace an existing, non-empty `path`.

    Returns:
        `path`.
    """
    remaining = [layer.name for layer in find_layers(model)]
    if remaining and not allow_fake_quant:
        raise ValueError(
            "export_saved_model: the model still holds MixedPrecision"
            f"Embedding layers ({', '.join(remaining)}) with float tables. "
            "Run keras_mpe.convert(model) first, or pass "
            "allow_fake_quant=True to export them as they are."
        )
    path = os.fspath(path)
    if os.path.exists(path) and os.listdir(path) and not overwrite:
        raise ValueError(
            f"export_saved_model: path={path!r} exists and is not empty. "
            "Pass overwrite=True to replace it."
        )
    try:
        model_inputs = model.input
    except (AttributeError, ValueError):
        model_inputs = None  # subclassed: called with the features dict
    if signature is None:
        if model_inputs is None:
            raise ValueError(
                f"export_saved_model: model '{model.name}' has no defined "
                "inputs (subclassed?): pass signature={name: tf.TensorSpec}."
            )
        signature = input_signature(model)
    positional = None
    if model_inputs is not None and not isinstance(model_inputs, dict):
        positional = list(input_signature(model))

    @tf.function(input_signature=[signature], jit_compile=jit_compile)
    def serve(features):
        inputs = features
        if positional is not None:
            inputs = [features[name] for name in positional]
            inputs = inputs[0] if len(inputs) == 1 else inputs
        outputs = model(inputs, training=False)
        if isinstance(outputs, dict):
            return outputs
        return {"outputs": outputs}

    module = tf.Module()
    module.variables_to_serve = [
        _compat.tf_variable(weight) for weight in model.weights
    ]
    module.serve = serve
    tf.saved_model.save(
        module,
        path,
        signatures={"serving_default": serve.get_concrete_function()},
    )
    return path
