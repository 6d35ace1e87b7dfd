"""Test helpers that load an exported SavedModel as TF Serving would."""

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
from concurrent import futures

import numpy as np
from tensorflow.core.protobuf import saved_model_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def meta_graph(path):
    """The MetaGraphDef in saved_model.pb, as TF Serving reads it."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    (meta,) = proto.meta_graphs
    return meta


def _run(command):
    """Runs `command`; a failure raises with what it printed."""
    done = subprocess.run(command, env=QUIET, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr[-4000:]}")


def predict_in_fresh_process(path, feeds, folder, output="outputs"):
    """`serving_default` run by a new process that cannot import keras_mpe."""
    inputs = os.path.join(folder, "fresh_inputs.npz")
    result = os.path.join(folder, "fresh_outputs.npy")
    np.savez(inputs, **feeds)
    script = (
        "import sys; sys.modules['keras_mpe'] = None\n"
        "import numpy as np, tensorflow as tf\n"
        f"feeds = dict(np.load({inputs!r}))\n"
        f"model = tf.saved_model.load({path!r})\n"
        "outputs = model.signatures['serving_default'](\n"
        "    **{k: tf.constant(v) for k, v in feeds.items()})\n"
        f"np.save({result!r}, outputs[{output!r}].numpy())\n"
    )
    _run([sys.executable, "-c", script])
    return np.load(result)


def predict_with_cpp_loader(path, feeds, folder, output="outputs"):
    """`serving_default` run by the C++ loader (`cpp_loader.py`)."""
    signature = meta_graph(path).signature_def["serving_default"]
    args = []
    for name, array in feeds.items():
        file = os.path.join(folder, f"cc_{name}.npy")
        np.save(file, array)
        args.append(f"{signature.inputs[name].name}={file}")
    result = os.path.join(folder, "cc_outputs.npz")
    _run(
        [
            sys.executable,
            os.path.join(HERE, "cpp_loader.py"),
            path,
            result,
            *args,
            f"fetch={signature.outputs[output].name}",
        ]
    )
    return np.load(result)["arr_0"]


@contextlib.contextmanager
def model_server(path, model_name):
    """A stand-in for tensorflow_model_server on local ports.

    It loads the SavedModel at `path` and answers the gRPC
    `PredictionService/Predict` call and the REST
    `POST /v1/models/{model_name}:predict` request (row "instances" and
    columnar "inputs" bodies) the way TF Serving does, by running the
    requested signature. Yields `(grpc_address, rest_url)`.
    """
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    loaded = tf.saved_model.load(path)

    def run(signature, columns):
        function = loaded.signatures[signature or "serving_default"]
        specs = function.structured_input_signature[1]
        feeds = {
            name: tf.constant(np.asarray(value), specs[name].dtype)
            for name, value in columns.items()
        }
        return {k: v.numpy() for k, v in function(**feeds).items()}

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC name)
            outputs = run(
                request.model_spec.signature_name,
                {
                    name: tf.make_ndarray(proto)
                    for name, proto in request.inputs.items()
                },
            )
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    class RestHandler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server name)
            if self.path != f"/v1/models/{model_name}:predict":
                self.send_error(404, f"no model at {self.path}")
                return
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            signature = body.get("signature_name")
            if "instances" in body:
                rows = body["instances"]
                columns = {
                    name: [row[name] for row in rows] for name in rows[0]
                }
                outputs = run(signature, columns)
                if len(outputs) == 1:
                    answer = next(iter(outputs.values())).tolist()
                else:
                    answer = [
                        {
                            name: value[i].tolist()
                            for name, value in outputs.items()
                        }
                        for i in range(len(rows))
                    ]
                answer = {"predictions": answer}
            else:
                outputs = run(signature, body["inputs"])
                values = {k: v.tolist() for k, v in outputs.items()}
                if len(values) == 1:
                    values = next(iter(values.values()))
                answer = {"outputs": values}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            del args

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        Servicer(), grpc_server
    )
    port = grpc_server.add_insecure_port("localhost:0")
    grpc_server.start()
    rest_server = http.server.ThreadingHTTPServer(("localhost", 0), RestHandler)
    thread = threading.Thread(target=rest_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"localhost:{port}", f"http://localhost:{rest_server.server_port}"
    finally:
        rest_server.shutdown()
        rest_server.server_close()
        grpc_server.stop(grace=None)
