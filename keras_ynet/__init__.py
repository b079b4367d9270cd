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

import sys

__version__ = "0.1.0"
__all__ = ["YNet", "RMACPooling", "BitCentering", "L2Normalize", "__version__"]

if sys.argv[:1] != ["-m"]:
    # Imported for their registration with keras.saving as much as for the names: a
    # model saved by this package names these classes, and Keras finds them only once
    # they are imported.
    from keras_ynet import hash_head as _hash_head  # noqa: F401  (ChannelGroupMean, ...)
    from keras_ynet import losses as _losses  # noqa: F401  (LossCoupling)
    from keras_ynet.layers import BitCentering, L2Normalize, RMACPooling
    from keras_ynet.model import YNet
else:
    # `python -m keras_ynet.<command>` imports this package before the command runs
    # (sys.argv[0] is "-m" until then). The commands check their arguments and data
    # before TensorFlow loads (a bad folder fails in a second, with no TensorFlow log
    # noise) and import the model themselves, which registers it; the names stay
    # reachable on first use.
    def __getattr__(name):
        if name in __all__:
            from keras_ynet import hash_head, layers, losses, model  # noqa: F401

            return {**vars(layers), **vars(model)}[name]
        raise AttributeError(f"module 'keras_ynet' has no attribute {name!r}")
