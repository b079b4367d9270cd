"""deploy.codes: the one place where hash codes change form, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from deploy import codes


def test_sign_rule_zero_is_bit_zero():
    assert codes.signs_to_bits(np.array([[0.3, -0.2, 0.0, -0.0]])).tolist() == [[1, 0, 0, 0]]


def test_pack_msb_first_by_hand():
    # bits 1000 0001 -> 0x81; second byte 0000 0001 -> 0x01
    bits = np.array([[1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]], np.uint8)
    packed = codes.pack_bits(bits)
    assert packed.tolist() == [[0x81, 0x01]]
    np.testing.assert_array_equal(codes.unpack_bits(packed, 16), bits)


def test_signs_round_trip():
    bits = np.array([[0, 1, 1, 0]], np.uint8)
    assert codes.bits_to_signs(bits).tolist() == [[-1.0, 1.0, 1.0, -1.0]]
    np.testing.assert_array_equal(codes.signs_to_bits(codes.bits_to_signs(bits)), bits)


def test_hamming_matrix_by_hand():
    q = np.array([[0] * 8, [1] * 8], np.uint8)
    d = np.array([[0] * 8, [1, 1, 0, 0, 0, 0, 0, 0]], np.uint8)
    assert codes.hamming_distance_matrix(q, d).tolist() == [[0, 2], [8, 6]]


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        codes.signs_to_bits(np.array([np.nan]))
    with pytest.raises(ValueError, match="0 or 1"):
        codes.pack_bits(np.array([[2] * 8]))
    with pytest.raises(ValueError, match="multiple of 8"):
        codes.pack_bits(np.ones((1, 12), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        codes.unpack_bits(np.ones((1, 2), np.int32))
