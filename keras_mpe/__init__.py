"""keras_mpe: Mixed-Precision Embeddings (arXiv 2409.20305) for Keras.

Public API:
    MixedPrecisionEmbedding: the layer (float, search and fixed phases).
    MPECallback: runs counting, search, selection and retraining in fit.
    Phase: the layer's phases.
    FixedBitEmbedding: the serving form (packed integer codes).
    convert: swaps every MixedPrecisionEmbedding for a FixedBitEmbedding.
    export_saved_model: writes a SavedModel that TF Serving loads.
    compression_report: payload and real bytes per table.
    find_layers: the keras_mpe layers inside a model.
"""

from keras_mpe.callback import MPECallback
from keras_mpe.convert import convert
from keras_mpe.embedding import MixedPrecisionEmbedding
from keras_mpe.embedding import Phase
from keras_mpe.export import export_saved_model
from keras_mpe.fixed_bit import FixedBitEmbedding
from keras_mpe.model_layers import find_layers
from keras_mpe.report import compression_report

__version__ = "0.1.0"

__all__ = [
    "FixedBitEmbedding",
    "MPECallback",
    "MixedPrecisionEmbedding",
    "Phase",
    "compression_report",
    "convert",
    "export_saved_model",
    "find_layers",
]
