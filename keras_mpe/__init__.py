"""keras_mpe: Mixed-Precision Embeddings (arXiv 2409.20305) for Keras.

Public API:
    MixedPrecisionEmbedding: the layer (float, search and fixed phases).
    MPECallback: runs counting, search, selection and retraining in fit.
    Phase: the layer's phases.
"""

from keras_mpe.callback import MPECallback
from keras_mpe.embedding import MixedPrecisionEmbedding
from keras_mpe.embedding import Phase

__version__ = "0.1.0"

__all__ = ["MPECallback", "MixedPrecisionEmbedding", "Phase"]
