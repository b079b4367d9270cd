"""keras-ynet: Y-Net (Fang et al., IEEE JBHI 2021) in Keras 3.

Encodes a medical image into a compact binary hash code for retrieval by Hamming
distance. The model has three named outputs: ``embedding`` (R-MAC branch), ``mask``
(FPN branch) and ``hash`` (hash head).
"""

__version__ = "0.1.0"
