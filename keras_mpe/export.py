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
import shutil

import tensorflow as tf
from tensorflow.saved_model.experimental import TrackableResource

from keras_mpe import _compat
from keras_mpe.model_layers import find_layers


def input_signature(model) -> dict:
    """Named specs of a functional model's inputs: `tf.TensorSpec`, or
    `tf.RaggedTensorSpec` / `tf.SparseTensorSpec` for ragged and sparse
    inputs."""
    inputs = model.input
    if isinstance(inputs, dict):
        named = inputs
    else:
        named = {
            tensor.name.split(":")[0]: tensor
            for tensor in tf.nest.flatten(inputs)
        }
    return {
        name: _named(_compat.input_spec(tensor), name)
        for name, tensor in named.items()
    }


def _named(spec, name):
    if isinstance(spec, tf.TensorSpec):
        return tf.TensorSpec(spec.shape, spec.dtype, name=name)
    return spec


def serving_inputs(specs: dict) -> dict:
    """The plain tensors a serving signature takes for named `specs`.

    TF Serving feeds dense tensors only, so a ragged input `x` (one
    ragged dimension) comes as `x_values` and `x_row_splits`, and a
    sparse input as `x_indices`, `x_values` and `x_dense_shape` (the
    components of `tf.RaggedTensor.from_row_splits` and
    `tf.SparseTensor`).
    """
    flat = {}
    for name, spec in specs.items():
        if isinstance(spec, tf.RaggedTensorSpec):
            if spec.ragged_rank != 1:
                raise ValueError(
                    f"export_saved_model: ragged input {name!r} must have "
                    f"one ragged dimension. Received: {spec}"
                )
            parts = {
                "values": ((None,), spec.dtype),
                "row_splits": ((None,), spec.row_splits_dtype),
            }
        elif isinstance(spec, tf.SparseTensorSpec):
            rank = spec.shape.rank
            parts = {
                "indices": ((None, rank), tf.int64),
                "values": ((None,), spec.dtype),
                "dense_shape": ((rank,), tf.int64),
            }
        else:
            flat[name] = tf.TensorSpec(spec.shape, spec.dtype, name=name)
            continue
        for part, (shape, dtype) in parts.items():
            key = f"{name}_{part}"
            flat[key] = tf.TensorSpec(shape, dtype, name=key)
    return flat


def _rebuilt(features: dict, specs: dict) -> dict:
    """The named inputs of `specs` from the tensors of `serving_inputs`."""
    inputs = {}
    for name, spec in specs.items():
        if isinstance(spec, tf.RaggedTensorSpec):
            inputs[name] = tf.RaggedTensor.from_row_splits(
                features[f"{name}_values"], features[f"{name}_row_splits"]
            )
        elif isinstance(spec, tf.SparseTensorSpec):
            inputs[name] = tf.SparseTensor(
                features[f"{name}_indices"],
                features[f"{name}_values"],
                features[f"{name}_dense_shape"],
            )
        else:
            inputs[name] = features[name]
    return inputs


def _graph_inputs(model):
    """A functional model's inputs; None for a subclassed model."""
    try:
        return model.input
    except (AttributeError, ValueError):
        return None


def _positional_inputs(model):
    """How `serve` turns the signature's dict into the model's inputs:
    the dict itself, or a functional model's inputs in order."""
    model_inputs = _graph_inputs(model)
    if model_inputs is None or isinstance(model_inputs, dict):
        return lambda features: features
    names = list(input_signature(model))

    def positional(features):
        inputs = [features[name] for name in names]
        return inputs[0] if len(inputs) == 1 else inputs

    return positional


def _inferred_signature(model):
    """The signature of a functional model's inputs, or of the inputs a
    subclassed model was first called with, and how to pass it on."""
    if _graph_inputs(model) is not None:
        signature = input_signature(model)
        return signature, _positional_inputs(model)
    spec = _compat.first_call_spec(model)
    if spec is None:
        raise ValueError(
            f"export_saved_model: model '{model.name}' has no defined inputs "
            "and no recorded call to take them from "
            f"({_compat.NO_CALL_SPEC}): pass "
            "signature={name: tf.TensorSpec}."
        )
    if isinstance(spec, dict):
        signature = {
            name: tf.TensorSpec(s.shape, s.dtype, name=name)
            for name, s in spec.items()
        }
        return signature, lambda features: features
    flat = tf.nest.flatten(spec)
    names = [f"input_{i}" for i in range(len(flat))]
    signature = {
        name: tf.TensorSpec(s.shape, s.dtype, name=name)
        for name, s in zip(names, flat, strict=True)
    }

    def packed(features):
        return tf.nest.pack_sequence_as(spec, [features[n] for n in names])

    return signature, packed


def _resources(model) -> list:
    """Every TensorFlow resource the model's layers hold besides
    variables: the lookup tables of StringLookup, IntegerLookup and
    TextVectorization layers (a SavedModel keeps only what it tracks)."""
    found = []
    for layer in [model, *_compat.sublayers(model)]:
        for value in vars(layer).values():
            is_resource = isinstance(value, TrackableResource)
            if is_resource and not any(value is f for f in found):
                found.append(value)
    return found


def _on_one_machine(model):
    """`model`, or a copy of it with its weights gathered from parameter
    servers.

    A model built under `ParameterServerStrategy` holds its variables on
    the parameter servers, partitioned ones as shards, which a SavedModel
    function cannot capture (`convert` keeps the other layers, so its
    result holds them too). A functional or Sequential model is cloned
    outside the strategy and given the same weights; a subclassed one
    cannot be cloned generically.
    """
    if not any(_compat.on_parameter_servers(w) for w in model.weights):
        return model
    if not _compat.is_graph_model(model):
        raise ValueError(
            f"export_saved_model: model '{model.name}' holds variables "
            "of a ParameterServerStrategy and is subclassed, so it cannot be "
            "copied off the parameter servers here. Build the same model "
            "outside the strategy's scope, call it once, "
            "`set_weights(model.get_weights())`, and export that."
        )
    with tf.distribute.get_strategy().scope():  # the default strategy
        copy = _compat.clone_model(
            model, lambda layer: type(layer).from_config(layer.get_config())
        )
    for original, copied in zip(model.layers, copy.layers, strict=True):
        copied.set_weights(_compat.gathered_weights(original))
    return copy


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
            One trained under `ParameterServerStrategy` is exported from
            a copy with its weights gathered (functional or Sequential
            models only).
        path: String. The version folder (`<base>/<model name>/<version>`).
        signature: Dict of name -> `tf.TensorSpec` (or
            `tf.RaggedTensorSpec` / `tf.SparseTensorSpec`, served as their
            component tensors: see `serving_inputs`), or None to take it from
            a functional model's inputs, or from the inputs of a
            subclassed (TFRS) model's first call where the Keras in use
            records them (tf_keras does; Keras 3 does not).
        jit_compile: Boolean. Compile the serving function with XLA (TF
            Serving's XLA on CPU is experimental; off by default).
        allow_fake_quant: Boolean. Export a model that still holds
            MixedPrecisionEmbedding layers (float tables, fake quantized).
        overwrite: Boolean. Replace an existing, non-empty `path`: its
            contents are deleted first.

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
    model = _on_one_machine(model)
    if signature is None:
        signature, to_model_inputs = _inferred_signature(model)
    else:
        to_model_inputs = _positional_inputs(model)
    flat_signature = serving_inputs(signature)
    if os.path.exists(path) and overwrite:
        shutil.rmtree(path)

    @tf.function(input_signature=[flat_signature], jit_compile=jit_compile)
    def serve(features):
        inputs = to_model_inputs(_rebuilt(features, signature))
        outputs = model(inputs, training=False)
        if isinstance(outputs, dict):
            return outputs
        return {"outputs": outputs}

    module = tf.Module()
    module.variables_to_serve = [
        _compat.tf_variable(weight) for weight in model.weights
    ]
    module.resources_to_serve = _resources(model)
    module.serve = serve
    tf.saved_model.save(
        module,
        path,
        signatures={"serving_default": serve.get_concrete_function()},
    )
    return path
