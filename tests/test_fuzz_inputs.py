"""Fuzzing the readers of untrusted input: only the documented error, never a crash.

* ``keras_ynet.dataset.load_dataset`` on random labels.csv text and bytes: a valid spec
  or :class:`DatasetError` (with a one-line summary);
* ``deploy.codes`` packing: pack then unpack is the identity for any bits, and malformed
  arrays raise ``ValueError``;
* ``HammingIndex.load`` on a random or mutated ``index.json``: a working index or
  :class:`IndexFormatError`.

At most 50 examples per test, derandomised: the same examples on every run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deploy import codes
from deploy.index import HammingIndex, IndexFormatError
from deploy.mapped_index import MappedIndex
from keras_ynet.dataset import DatasetError, load_dataset
from keras_ynet.dataset_csv import REQUIRED_COLUMNS

FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# labels.csv -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A dataset folder with two real image/mask pairs, so some rows name real files."""
    root = tmp_path_factory.mktemp("fuzz_data")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i, rid in enumerate(("a", "b")):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(root / "images" / f"{rid}.png")
        Image.fromarray(np.eye(16, dtype=np.uint8)).save(root / "masks" / f"{rid}.png")
    return root


def check_dataset(root, data: bytes) -> None:
    (root / "labels.csv").write_bytes(data)
    try:
        spec = load_dataset(root)
    except DatasetError as err:
        assert str(err) and "\n" not in err.summary
    else:
        assert spec.records and spec.split("train") and spec.split("test")


ODD_CELLS = st.one_of(
    st.sampled_from(["", " ", "x,y", '"q"', "../images/a.png", "/", "images/a.png\n", "é", "\r"]),
    st.text(max_size=12),
)
# Mostly plausible values per column, so examples get past the header to the files.
CELLS = {
    "id": st.sampled_from(["a", "b", "c", "a"]),
    "image": st.sampled_from(["images/a.png", "images/b.png", "masks/a.png", "images/c.png"]),
    "mask": st.sampled_from(["masks/a.png", "masks/b.png", "images/b.png", ""]),
    "label": st.sampled_from(["sick", "well"]),
    "split": st.sampled_from(["train", "test", "val", "tst"]),
}


@st.composite
def csv_texts(draw) -> str:
    """The required columns in any order (now and then one missing), then rows of
    plausible or odd cells (now and then one too many or too few)."""
    columns = list(draw(st.permutations(REQUIRED_COLUMNS)))
    if draw(st.integers(0, 5)) == 0:
        columns.pop(draw(st.integers(0, len(columns) - 1)))
    columns += draw(st.lists(st.sampled_from(["note", "", " x "]), max_size=2))
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        row = [draw(CELLS.get(c, ODD_CELLS) | ODD_CELLS) for c in columns]
        if draw(st.integers(0, 5)) == 0:
            row = row[:-1] if draw(st.booleans()) else [*row, "extra"]
        rows.append(row)
    out = io.StringIO()
    terminator = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    csv.writer(out, lineterminator=terminator).writerows([columns, *rows])
    return out.getvalue()


@FUZZ
@given(text=csv_texts())
def test_structured_csv_gives_a_spec_or_dataset_error(folder, text):
    check_dataset(folder, text.encode("utf-8"))


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text_gives_dataset_error(folder, text):
    check_dataset(folder, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_give_dataset_error(folder, data):
    check_dataset(folder, data)


# Code packing ----------------------------------------------------------------------------


@FUZZ
@given(n=st.integers(0, 5), n_bytes=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_pack_then_unpack_is_the_identity(n, n_bytes, seed):
    bits = np.random.default_rng(seed).integers(0, 2, (n, 8 * n_bytes), dtype=np.uint8)
    packed = codes.pack_bits(bits)
    assert packed.shape == (n, n_bytes) and packed.dtype == np.uint8
    np.testing.assert_array_equal(codes.unpack_bits(packed, 8 * n_bytes), bits)
    np.testing.assert_array_equal(codes.unpack_bits(packed), bits)
    np.testing.assert_array_equal(codes.pack_bits(bits.astype(bool)), packed)
    if n:  # bit i is byte i // 8, value 2 ** (7 - i % 8)
        i = int(np.random.default_rng(seed).integers(0, 8 * n_bytes))
        assert (packed[0, i // 8] >> (7 - i % 8)) & 1 == bits[0, i]


@FUZZ
@given(n=st.integers(1, 4), length=st.integers(1, 100), seed=st.integers(0, 2**32 - 1))
def test_bits_that_are_not_whole_bytes_or_not_0_1_are_refused(n, length, seed):
    rng = np.random.default_rng(seed)
    if length % 8:
        with pytest.raises(ValueError, match="not a multiple of 8"):
            codes.pack_bits(rng.integers(0, 2, (n, length), dtype=np.uint8))
    bad = rng.integers(0, 2, (n, 8 * length), dtype=np.int64)
    bad[rng.integers(0, n), rng.integers(0, 8 * length)] = rng.choice([-1, 2, 255])
    with pytest.raises(ValueError, match="0 or 1"):
        codes.pack_bits(bad)


@FUZZ
@given(data=st.binary(min_size=0, max_size=40), extra=st.integers(1, 64))
def test_unpacking_too_few_bytes_is_refused(data, extra):
    packed = np.frombuffer(data, np.uint8)[None]
    with pytest.raises(ValueError, match=f"asked for {8 * len(data) + extra} bits"):
        codes.unpack_bits(packed, 8 * len(data) + extra)
    with pytest.raises(ValueError, match="uint8"):
        codes.unpack_bits(packed.astype(np.int16), 8 * len(data))


@FUZZ
@given(width=st.integers(1, 40).filter(lambda w: w not in (8, 64)), seed=st.integers(0, 99))
def test_codes_of_the_wrong_length_are_refused_by_the_index(width, seed):
    index = HammingIndex(bits=64, fingerprint="enc-1")
    wrong = np.random.default_rng(seed).integers(0, 2, (3, width), dtype=np.uint8)
    with pytest.raises(ValueError, match=f"{width} values per code"):
        index.batch_add(wrong, ["a", "b", "c"])
    with pytest.raises(ValueError, match="empty index"):
        index.lookup(np.zeros(64, np.uint8), 1)  # nothing was added


# Index sidecar ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index_folder(tmp_path_factory):
    """A valid 5-item index; each example overwrites its index.json."""
    folder = tmp_path_factory.mktemp("fuzz_index") / "idx"
    index = HammingIndex(bits=64, fingerprint="enc-1")
    bits = np.random.default_rng(0).integers(0, 2, (5, 64), dtype=np.uint8)
    index.batch_add(bits, ["a", "b", "c", 3, 4], [{"label": str(i)} for i in range(5)])
    index.save(folder)
    return folder, json.loads((folder / "index.json").read_text())


def check_index(folder, data: bytes) -> None:
    (folder / "index.json").write_bytes(data)
    try:
        index = HammingIndex.load(folder)
    except IndexFormatError as err:
        assert str(folder / "index.json") in str(err) or str(folder) in str(err)
    else:
        hits = index.lookup(np.zeros(64, np.uint8), 3) if len(index) else []
        assert len(hits) == min(3, len(index))


SIDECAR_KEYS = (
    "format_version", "metric", "bits", "fingerprint", "n_trees", "search_k", "backend",
    "annoy_min_items", "count", "n_annoy", "n_delta", "codes_sha256", "annoy_bytes",
    "items_bytes", "items_sha256", "offsets_bytes", "offsets_sha256",
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_sidecar_bytes_give_index_format_error(index_folder, data):
    check_index(index_folder[0], data)


@FUZZ
@given(value=JSON)
def test_random_sidecar_json_gives_index_format_error(index_folder, value):
    check_index(index_folder[0], json.dumps(value).encode())


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(SIDECAR_KEYS),
        JSON | st.integers(-2, 300),
        min_size=1,
        max_size=3,
    ),
    drop=st.booleans(),
)
def test_mutated_sidecar_loads_or_gives_index_format_error(index_folder, changes, drop):
    folder, valid = index_folder
    meta = dict(valid)
    for key, value in changes.items():
        if drop:
            meta.pop(key, None)
        else:
            meta[key] = value
    check_index(folder, json.dumps(meta).encode())


@FUZZ
@given(at=st.integers(0, 10**6), data=st.binary(min_size=1, max_size=12))
def test_mutated_items_file_reads_or_gives_index_format_error(index_folder, at, data):
    """Bytes of items.jsonl overwritten (its size kept, its sha256 recorded, so only the
    lines' own checks can tell): every item reads, or IndexFormatError names the file."""
    folder, valid = index_folder
    original = (folder / "items.jsonl").read_bytes()
    start = at % len(original)
    damaged = (original[:start] + data + original[start + len(data) :])[: len(original)]
    meta = {**valid, "items_sha256": hashlib.sha256(damaged).hexdigest()}
    try:
        (folder / "index.json").write_text(json.dumps(meta))
        (folder / "items.jsonl").write_bytes(damaged)
        mapped = MappedIndex.open(folder)
        for position in range(5):
            try:
                id_, metadata = mapped.item(position)
            except IndexFormatError as err:
                assert str(folder / "items.jsonl") in str(err) and f"item {position}" in str(err)
            else:
                assert isinstance(id_, str | int) and isinstance(metadata, dict)
        try:
            HammingIndex.load(folder)
        except IndexFormatError as err:
            assert str(folder) in str(err)
    finally:
        (folder / "items.jsonl").write_bytes(original)
        (folder / "index.json").write_text(json.dumps(valid))
