"""Test helpers that load an exported SavedModel as TF Serving would."""

import os
import subprocess
import sys

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
    subprocess.run([sys.executable, "-c", script], check=True, env=QUIET)
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
    subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "cpp_loader.py"),
            path,
            result,
            *args,
            f"fetch={signature.outputs[output].name}",
        ],
        check=True,
        env=QUIET,
    )
    return np.load(result)["arr_0"]
