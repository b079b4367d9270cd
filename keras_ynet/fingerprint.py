"""The encoder fingerprint: one short string that changes whenever the codes could.

Exports, index sidecars and contracts record it, so a host can refuse an index made by
another encoder. It covers exactly what the exported encoder computes with: the input
shape, the bit length, the hash head kind, and every weight of the sub-model from the
input to the ``hash`` layer (main branch, hash head, bit thresholds). The R-MAC and FPN
branches are training-only and left out: retraining them alone does not change a code.
"""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np

HASH_LAYER = "hash"
RESCALE_LAYER = "rescale"  # the model's pixel scaling; the export does it on a flat image
FINGERPRINT_VERSION = 1
FINGERPRINT_HEX_CHARS = 16  # the first 64 bits of the sha256, as hex


def hash_submodel(model: keras.Model) -> keras.Model:
    """The part of a YNet that makes ``hash``: float image in [0, 255] -> (N, bits).

    This is the graph the exported encoder runs (the export adds only a uint8 cast and
    the bit packing), and the fingerprint covers exactly its weights.
    """
    return keras.Model(model.input, model.get_layer(HASH_LAYER).output, name="ynet_hash")


def fingerprint_facts(model: keras.Model) -> dict:
    """The configuration facts that enter the fingerprint (JSON-serialisable)."""
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "input_shape": [int(d) for d in model.input_shape_],
        "bits": int(model.bits),
        "hash_head": str(model.hash_head),
    }


def model_fingerprint(model: keras.Model) -> str:
    """sha256 of the encoder's config facts and weights; the first 16 hex characters.

    The digest reads, in order: the JSON of :func:`fingerprint_facts` (sorted keys),
    then for every weight of :func:`hash_submodel` sorted by its path
    (``stem_conv/kernel``, ``hash/thresholds``, ...): the path, dtype and shape, and the
    little-endian C-order bytes of its value. Paths come from the explicit layer names,
    so the fingerprint is the same after a save/load round trip and in another process.

    Args:
        model: a YNet (any model with ``input_shape_``, ``bits``, ``hash_head`` and a
            layer named ``hash``).

    Returns:
        16 lowercase hex characters (64 bits of the sha256).

    Example:
        >>> model_fingerprint(load_ynet("run/model.keras"))
        '3f9c0d2a7be41e55'
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(fingerprint_facts(model), sort_keys=True).encode())
    weights = sorted(hash_submodel(model).weights, key=lambda v: v.path)
    paths = [v.path for v in weights]
    if len(set(paths)) != len(paths):
        raise ValueError("encoder weights have duplicate paths; the fingerprint would be ambiguous")
    for variable in weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable.value))
        value = value.astype(value.dtype.newbyteorder("<"), copy=False)
        header = f"{variable.path}|{value.dtype.str}|{list(value.shape)}\n"
        digest.update(header.encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:FINGERPRINT_HEX_CHARS]
