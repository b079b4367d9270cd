"""keras-ynet: Y-Net (Fang et al., IEEE JBHI 2021) in Keras 3.

Encodes a medical image into a compact binary hash code for retrieval by Hamming
distance. The model has three named outputs: ``embedding`` (R-MAC branch), ``mask``
(FPN branch) and ``hash`` (hash head).

Importing the package registers every custom layer and the model class with Keras, so
a saved model loads with plain Keras::

    import keras
    import keras_ynet

    model = keras.saving.load_model("runs/rimone/model.keras")
    isinstance(model, keras_ynet.YNet)  # True
"""

# Imported for their registration with keras.saving as much as for the names: a model
# saved by this package names these classes, and Keras finds them only once imported.
from keras_ynet import hash_head as _hash_head  # noqa: F401  (ChannelGroupMean, StopGradient)
from keras_ynet import losses as _losses  # noqa: F401  (LossCoupling)
from keras_ynet.layers import BitCentering, L2Normalize, RMACPooling
from keras_ynet.model import YNet

__version__ = "0.1.0"
__all__ = ["YNet", "RMACPooling", "BitCentering", "L2Normalize", "__version__"]
