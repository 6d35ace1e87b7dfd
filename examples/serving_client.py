r"""Sends Predict requests to a TF Serving model server, as its users do.

Serve a model exported by `keras_mpe.export_saved_model` (for example by
`examples/criteo_ctr.py`, which writes /tmp/keras_mpe/criteo_ctr/1):

    docker run -p 8500:8500 -p 8501:8501 \
        -v /tmp/keras_mpe/criteo_ctr:/models/criteo_ctr \
        -e MODEL_NAME=criteo_ctr tensorflow/serving
    # or: tensorflow_model_server --port=8500 --rest_api_port=8501 \
    #       --model_name=criteo_ctr \
    #       --model_base_path=/tmp/keras_mpe/criteo_ctr

then send a batch of example inputs over gRPC and REST:

    python examples/serving_client.py --model-dir /tmp/keras_mpe/criteo_ctr/1 \
        --grpc localhost:8500 --rest http://localhost:8501

The inputs are made from the `serving_default` signature of `--model-dir`
(names, dtypes, shapes); `--dry-run` only prints the REST body.
"""

import json
import os
import types
import urllib.request

import numpy as np
from absl import app
from absl import flags
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import tensor_util

SIGNATURE = "serving_default"
FLAGS = flags.FLAGS


def define_flags():
    """The command line. Defined when run as a script, not on import."""
    flags.DEFINE_string(
        "model-dir",
        None,
        "Required. The exported SavedModel version folder (saved_model.pb); "
        "its serving_default signature gives the inputs' names, dtypes and "
        "shapes.",
    )
    flags.mark_flag_as_required("model-dir")
    flags.DEFINE_string(
        "model-name",
        "criteo_ctr",
        "The model server's --model_name: the model the requests address.",
    )
    flags.DEFINE_string(
        "grpc",
        None,
        "host:port of TF Serving's gRPC API, e.g. localhost:8500.",
    )
    flags.DEFINE_string(
        "rest",
        None,
        "http://host:port of TF Serving's REST API, e.g. "
        "http://localhost:8501.",
    )
    flags.DEFINE_integer(
        "batch-size", 4, "Examples in the request.", lower_bound=1
    )
    flags.DEFINE_bool(
        "dry-run",
        False,
        "Only print the inputs and the REST body; send nothing (also what "
        "happens when neither --grpc nor --rest is given).",
    )


def input_spec(model_dir, signature=SIGNATURE) -> dict:
    """`{input name: (numpy dtype, shape with None for unknown)}`."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    inputs = proto.meta_graphs[0].signature_def[signature].inputs
    return {
        name: (
            np.dtype(types_pb2.DataType.Name(info.dtype)[3:].lower()),
            [None if d.size < 0 else d.size for d in info.tensor_shape.dim],
        )
        for name, info in inputs.items()
    }


def example_inputs(spec, batch_size=4, seed=0) -> dict:
    """A batch of valid inputs: small ids for integers, counts for floats."""
    rng = np.random.default_rng(seed)
    batch = {}
    for name, (dtype, shape) in spec.items():
        shape = [batch_size if d is None else d for d in shape]
        if np.issubdtype(dtype, np.integer):
            batch[name] = rng.integers(0, 10, shape).astype(dtype)
        else:
            batch[name] = rng.poisson(2.0, shape).astype(dtype)
    return batch


def predict_grpc(address, model_name, inputs, signature=SIGNATURE):
    """A gRPC PredictRequest; returns `{output name: ndarray}`."""
    import grpc
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tensor_util.make_tensor_proto(value))
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=30.0)
    return {
        name: tensor_util.MakeNdarray(proto)
        for name, proto in response.outputs.items()
    }


def rest_body(inputs, row_format=True, signature=SIGNATURE) -> str:
    """The JSON body: row format `{"instances": [...]}` (one object per
    example) or columnar `{"inputs": {...}}`."""
    if row_format:
        size = len(next(iter(inputs.values())))
        instances = [
            {name: value[i].tolist() for name, value in inputs.items()}
            for i in range(size)
        ]
        body = {"signature_name": signature, "instances": instances}
    else:
        columns = {name: value.tolist() for name, value in inputs.items()}
        body = {"signature_name": signature, "inputs": columns}
    return json.dumps(body)


def predict_rest(url, model_name, inputs, row_format=True, signature=SIGNATURE):
    """POSTs to `{url}/v1/models/{model_name}:predict`; returns the JSON
    answer's "predictions" (row format) or "outputs" (columnar)."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/models/{model_name}:predict",
        data=rest_body(inputs, row_format, signature).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30.0) as response:
        answer = json.loads(response.read())
    return answer["predictions" if row_format else "outputs"]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # The flags as attributes: --model-dir is args.model_dir.
    args = types.SimpleNamespace(
        **{k.replace("-", "_"): v for k, v in FLAGS.flag_values_dict().items()}
    )
    spec = input_spec(args.model_dir)
    inputs = example_inputs(spec, args.batch_size)
    print("inputs:", {name: (str(d), s) for name, (d, s) in spec.items()})
    if args.dry_run or not (args.grpc or args.rest):
        print("REST body:", rest_body(inputs))
        return
    if args.grpc:
        outputs = predict_grpc(args.grpc, args.model_name, inputs)
        for name, value in outputs.items():
            print(f"gRPC {name}:", value.ravel().tolist())
    if args.rest:
        predictions = predict_rest(args.rest, args.model_name, inputs)
        print("REST predictions:", predictions)


if __name__ == "__main__":
    define_flags()
    app.run(main)
