"""The one place where hash codes change form.

Three forms exist in this project:

* signs: float values whose sign is the bit (the model's tanh output in (-1, 1), or
  {-1, +1}); a value > 0 is bit 1, anything else (0 included) is bit 0;
* bits: uint8 arrays of 0/1, one column per bit (what Annoy is fed);
* packed: uint8 bytes, bits packed most-significant-bit first, the layout of
  ``numpy.packbits`` and of the exported encoder's ``code`` output.

Only numpy is imported here, so the device runtime can use it without TensorFlow.
"""

from __future__ import annotations

import numpy as np


def signs_to_bits(values: np.ndarray) -> np.ndarray:
    """Maps real values to {0, 1} bits: value > 0 -> 1.

    Args:
        values: array of shape (N, bits) (or (bits,)), any real dtype.

    Returns:
        uint8 array of the same shape with values 0/1.
    """
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        raise ValueError("hash values contain NaN or inf; the encoder output is invalid")
    return (values > 0).astype(np.uint8)


def bits_to_signs(bits: np.ndarray) -> np.ndarray:
    """Maps {0, 1} bits to {-1, +1} (float32)."""
    bits = _check_bits(bits)
    return bits.astype(np.float32) * 2.0 - 1.0


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Packs {0, 1} bits of shape (N, bits) into uint8 bytes (N, bits / 8), MSB first."""
    bits = _check_bits(bits)
    if bits.shape[-1] % 8:
        raise ValueError(f"bit length {bits.shape[-1]} is not a multiple of 8")
    return np.packbits(bits, axis=-1)


def unpack_bits(packed: np.ndarray, n_bits: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint8 bytes (N, B) -> {0, 1} bits (N, 8 * B)."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8 bytes, got {packed.dtype}")
    bits = np.unpackbits(packed, axis=-1)
    if n_bits is not None:
        if n_bits > bits.shape[-1]:
            raise ValueError(f"asked for {n_bits} bits from {packed.shape[-1]} bytes")
        bits = bits[..., :n_bits]
    return bits


def packed_to_words(packed: np.ndarray) -> np.ndarray:
    """Views packed bytes (N, B) as uint64 words (N, ceil(B / 8)), zero-padding the tail.

    Popcount over 64-bit words is what makes an exact Hamming scan fast; the byte order
    inside a word does not matter for a popcount of an XOR.
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if packed.ndim != 2:
        raise ValueError(f"packed codes must be 2-D (N, bytes), got shape {packed.shape}")
    n, nbytes = packed.shape
    pad = (-nbytes) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((n, pad), np.uint8)], axis=1)
    return packed.view(np.uint64)


def hamming_distance_matrix(query_bits: np.ndarray, db_bits: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances between {0, 1} code arrays (Q, bits) and (N, bits).

    Returns:
        int32 array (Q, N).
    """
    q = packed_to_words(pack_bits(query_bits))
    d = packed_to_words(pack_bits(db_bits))
    if q.shape[1] != d.shape[1]:
        raise ValueError(
            f"query codes have {query_bits.shape[-1]} bits, database {db_bits.shape[-1]}"
        )
    out = np.zeros((q.shape[0], d.shape[0]), np.int32)
    for w in range(q.shape[1]):
        out += np.bitwise_count(q[:, None, w] ^ d[None, :, w]).astype(np.int32)
    return out


def _check_bits(bits: np.ndarray) -> np.ndarray:
    bits = np.asarray(bits)
    if bits.dtype == bool:
        return bits.astype(np.uint8)
    if not np.issubdtype(bits.dtype, np.integer):
        raise ValueError(f"bits must be an integer 0/1 array, got {bits.dtype}; use signs_to_bits")
    if bits.size and (bits.min() < 0 or bits.max() > 1):
        raise ValueError("bits must be 0 or 1")
    return bits.astype(np.uint8, copy=False)
