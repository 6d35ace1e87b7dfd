"""Runs a SavedModel through TensorFlow's C++ loader, as TF Serving does.

    python tests/cpp_loader.py SAVED_MODEL_DIR OUT.npz \
        serving_default_ids:0=ids.npy fetch=StatefulPartitionedCall:0

Calls the C API of `libtensorflow_cc.so.2` (shipped in the tensorflow
wheel) with ctypes: TF_LoadSessionFromSavedModel with the "serve" tag, then
TF_SessionRun on graph tensors named as in the `serving_default`
signature (feeds as TENSOR=FILE.npy, fetches as fetch=TENSOR); the outputs
go to OUT.npz in fetch order. The process never imports TensorFlow's
Python package, so no Python op or registration can help the model load.
"""

import ctypes
import importlib.util
import os
import sys

import numpy as np

_DTYPES = {
    np.dtype(np.float32): 1,
    np.dtype(np.int32): 3,
    np.dtype(np.int64): 9,
}
_NUMPY = {code: dtype for dtype, code in _DTYPES.items()}
TF_STRING = 7
TSTRING_BYTES = 24  # sizeof(TF_TString) on 64-bit platforms


class _Output(ctypes.Structure):
    _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


def _library():
    spec = importlib.util.find_spec("tensorflow")
    folder = spec.submodule_search_locations[0]
    ctypes.CDLL(
        os.path.join(folder, "libtensorflow_framework.so.2"),
        mode=ctypes.RTLD_GLOBAL,
    )
    lib = ctypes.CDLL(
        os.path.join(folder, "libtensorflow_cc.so.2"), mode=ctypes.RTLD_GLOBAL
    )
    pointer = ctypes.c_void_p
    for name, restype in [
        ("TF_NewStatus", pointer),
        ("TF_NewGraph", pointer),
        ("TF_NewSessionOptions", pointer),
        ("TF_Message", ctypes.c_char_p),
        ("TF_LoadSessionFromSavedModel", pointer),
        ("TF_GraphOperationByName", pointer),
        ("TF_AllocateTensor", pointer),
        ("TF_TensorData", ctypes.c_size_t),
        ("TF_TensorType", ctypes.c_int),
        ("TF_NumDims", ctypes.c_int),
        ("TF_Dim", ctypes.c_int64),
        ("TF_TensorByteSize", ctypes.c_size_t),
    ]:
        getattr(lib, name).restype = restype
    return lib


def _check(lib, status, what):
    if lib.TF_GetCode(ctypes.c_void_p(status)) != 0:
        message = lib.TF_Message(ctypes.c_void_p(status)).decode()
        raise RuntimeError(f"{what}: {message}")


def _operation(lib, graph, tensor_name):
    name, index = tensor_name.rsplit(":", 1)
    op = lib.TF_GraphOperationByName(ctypes.c_void_p(graph), name.encode())
    if not op:
        raise RuntimeError(f"no operation {name!r} in the graph")
    return _Output(op, int(index))


def _to_string_tensor(lib, array):
    """A TF_STRING tensor of byte or unicode strings (TF_TString each)."""
    dims = (ctypes.c_int64 * array.ndim)(*array.shape)
    tensor = lib.TF_AllocateTensor(
        TF_STRING, dims, array.ndim, ctypes.c_size_t(array.size * TSTRING_BYTES)
    )
    data = lib.TF_TensorData(ctypes.c_void_p(tensor))
    for i, value in enumerate(array.ravel()):
        raw = value.encode() if isinstance(value, str) else bytes(value)
        element = ctypes.c_void_p(data + i * TSTRING_BYTES)
        lib.TF_StringInit(element)
        lib.TF_StringCopy(element, raw, ctypes.c_size_t(len(raw)))
    return tensor


def _to_tensor(lib, array):
    if array.dtype.kind in "SUO":
        return _to_string_tensor(lib, array)
    array = np.ascontiguousarray(array)
    dims = (ctypes.c_int64 * array.ndim)(*array.shape)
    tensor = lib.TF_AllocateTensor(
        _DTYPES[array.dtype], dims, array.ndim, ctypes.c_size_t(array.nbytes)
    )
    data = ctypes.c_void_p(lib.TF_TensorData(ctypes.c_void_p(tensor)))
    ctypes.memmove(data, array.ctypes.data, array.nbytes)
    return tensor


def _to_numpy(lib, tensor):
    tensor = ctypes.c_void_p(tensor)
    dtype = _NUMPY[lib.TF_TensorType(tensor)]
    shape = [lib.TF_Dim(tensor, i) for i in range(lib.TF_NumDims(tensor))]
    size = lib.TF_TensorByteSize(tensor)
    raw = ctypes.string_at(ctypes.c_void_p(lib.TF_TensorData(tensor)), size)
    return np.frombuffer(raw, dtype).reshape(shape).copy()


def run(export_dir, feeds, fetches):
    """Loads `export_dir` with the C++ loader and runs it once.

    Args:
        export_dir: The SavedModel folder.
        feeds: Dict of graph tensor name -> numpy array.
        fetches: List of graph tensor names.

    Returns:
        List of numpy arrays, one per fetch.
    """
    lib = _library()
    status = lib.TF_NewStatus()
    graph = lib.TF_NewGraph()
    tags = (ctypes.c_char_p * 1)(b"serve")
    session = lib.TF_LoadSessionFromSavedModel(
        ctypes.c_void_p(lib.TF_NewSessionOptions()),
        None,
        os.fspath(export_dir).encode(),
        tags,
        1,
        ctypes.c_void_p(graph),
        None,
        ctypes.c_void_p(status),
    )
    _check(lib, status, "TF_LoadSessionFromSavedModel")
    inputs = (_Output * len(feeds))(
        *[_operation(lib, graph, name) for name in feeds]
    )
    values = (ctypes.c_void_p * len(feeds))(
        *[_to_tensor(lib, array) for array in feeds.values()]
    )
    outputs = (_Output * len(fetches))(
        *[_operation(lib, graph, name) for name in fetches]
    )
    results = (ctypes.c_void_p * len(fetches))()
    lib.TF_SessionRun(
        ctypes.c_void_p(session),
        None,
        inputs,
        values,
        len(feeds),
        outputs,
        results,
        len(fetches),
        None,
        0,
        None,
        ctypes.c_void_p(status),
    )
    _check(lib, status, "TF_SessionRun")
    return [_to_numpy(lib, tensor) for tensor in results]


def main(argv):
    export_dir, out_path, *pairs = argv
    feeds, fetches = {}, []
    for pair in pairs:
        key, value = pair.split("=", 1)
        if key == "fetch":
            fetches.append(value)
        else:
            feeds[key] = np.load(value)
    outputs = run(export_dir, feeds, fetches)
    np.savez(out_path, *outputs)
    assert "tensorflow" not in sys.modules, "TensorFlow Python was imported"


if __name__ == "__main__":
    main(sys.argv[1:])
