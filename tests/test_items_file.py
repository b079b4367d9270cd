"""Format 2 of an index folder: items.jsonl + items_offsets.npy (deploy.items_file).

MappedIndex opens a folder in O(1) of its item count and reads one line per hit; every
damage it can meet (a line, an offset, a size) is an IndexFormatError naming the file
and the position. HammingIndex.load reads and checks everything. A format-1 folder
(tests/data/index_format1, written by the format-1 code) still loads and searches, and
its next save writes format 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from index_files import edit_items, sidecar

from deploy import items_file
from deploy.index import HammingIndex, IndexFormatError
from deploy.index_info import verify_index
from deploy.mapped_index import MappedIndex

FORMAT1 = Path(__file__).parent / "data" / "index_format1"
FORMAT1_IDS = ["case-001", "case-002", 7, "café/ü.png", "case-005", 42]
FORMAT1_META = [
    {"path": "images/a.png", "label": "benign"},
    {"path": "images/b.png", "label": "malignant"},
    {},
    {"path": "images/ü.png", "label": "ünïcode"},
    {"label": "x", "dicom": {"StudyInstanceUID": "1.2.3"}},
    {"path": "", "label": ""},
]


def small_index(n=40, seed=3) -> HammingIndex:
    rng = np.random.default_rng(seed)
    index = HammingIndex(bits=64, fingerprint="enc-1+float")
    ids = [f"case-{i:07d}" if i % 3 else i for i in range(n)]
    meta = [
        {"path": f"images/{i}.png", "label": ["a", "b"][i % 2]} if i % 4 else {} for i in range(n)
    ]
    index.batch_add(rng.integers(0, 2, (n, 64)), ids, meta)
    return index


@pytest.fixture
def folder(tmp_path) -> Path:
    small_index().save(tmp_path / "idx")
    return tmp_path / "idx"


def test_mapped_item_equals_hamming_index_at_every_position(folder):
    loaded = HammingIndex.load(folder)
    mapped = MappedIndex.open(folder)
    assert mapped.format_version == 2 and len(mapped) == 40
    assert [mapped.item(p) for p in range(40)] == loaded.entries()
    assert mapped.item(-1) == loaded.entries()[-1]
    assert mapped.ids == loaded.ids
    assert mapped.indexed_paths() == loaded.indexed_paths()
    queries = np.random.default_rng(9).integers(0, 2, (5, 64))
    assert mapped.batch_lookup(queries, 7) == loaded.batch_lookup(queries, 7)
    with pytest.raises(IndexError, match=r"position must be in \[0, 40\), got 40"):
        mapped.item(40)


def test_reading_every_item_in_blocks_equals_reading_each(tmp_path):
    """9000 items: two whole blocks of 4096 lines and a partial one."""
    index = small_index(9000)
    index.save(tmp_path / "idx")
    mapped = MappedIndex.open(tmp_path / "idx")
    assert list(mapped.entries()) == index.entries()
    assert mapped.entries().__next__() == (0, {})
    assert [mapped.item(p) for p in (4095, 4096, 8191, 8192, 8999)] == [
        index.entries()[p] for p in (4095, 4096, 8191, 8192, 8999)
    ]


def test_lines_and_offsets_are_the_documented_bytes(folder):
    lines = (folder / "items.jsonl").read_bytes()
    assert lines.startswith(b'{"id":0,"meta":{}}\n{"id":"case-0000001","meta":{"path":')
    offsets = np.load(folder / "items_offsets.npy")
    assert offsets.dtype == np.dtype("<u8") and offsets.shape == (41,)
    assert offsets[0] == 0 and offsets[-1] == len(lines) == sidecar(folder)["items_bytes"]
    assert lines[offsets[1] : offsets[2]] == (
        b'{"id":"case-0000001","meta":{"path":"images/1.png","label":"b"}}\n'
    )
    assert "ids" not in sidecar(folder) and "metadata" not in sidecar(folder)


def test_opening_reads_neither_the_items_nor_the_codes(folder, monkeypatch):
    """Every byte but item 5's line is damaged, in items.jsonl and in codes.npy's data:
    opening without the hashes (a large folder's open) still succeeds, so it read neither;
    item 5 reads right, the others fail."""
    lines = bytearray((folder / "items.jsonl").read_bytes())
    offsets = np.load(folder / "items_offsets.npy").tolist()
    for p in range(40):
        if p != 5:
            lines[offsets[p] : offsets[p + 1] - 1] = b"#" * (offsets[p + 1] - offsets[p] - 1)
    (folder / "items.jsonl").write_bytes(bytes(lines))
    codes = bytearray((folder / "codes.npy").read_bytes())
    codes[128:] = b"\xff" * (len(codes) - 128)
    (folder / "codes.npy").write_bytes(bytes(codes))
    read = []
    real_pread = items_file.os.pread
    monkeypatch.setattr(items_file.os, "pread", lambda *a: read.append(a[1:]) or real_pread(*a))
    mapped = MappedIndex.open(folder, verify=False)  # as a large folder opens
    assert read == []
    assert mapped.item(5) == ("case-0000005", {"path": "images/5.png", "label": "b"})
    assert read == [(offsets[6] - offsets[5] + 1, offsets[5] - 1)]  # one line and its "\n"
    with pytest.raises(IndexFormatError, match=r"items\.jsonl is corrupted at item 4 \(line 5\)"):
        mapped.item(4)
    assert mapped.packed_codes([0]).tolist() == [[255] * 8]  # the map: what is on disk now


def _edit_file(folder, name, edit):
    (folder / name).write_bytes(edit((folder / name).read_bytes()))


def _set_offsets(folder, edit, record=False):
    offsets = np.load(folder / "items_offsets.npy")
    edit(offsets)
    np.save(folder / "items_offsets.npy", offsets)
    if record:  # the sidecar agrees with the damaged file: only its contents can tell
        meta = sidecar(folder)
        meta["offsets_sha256"] = items_file.file_sha256(folder / "items_offsets.npy")
        meta["offsets_bytes"] = (folder / "items_offsets.npy").stat().st_size
        (folder / "index.json").write_text(json.dumps(meta))


def _shorten_offsets(folder):
    np.save(folder / "items_offsets.npy", np.load(folder / "items_offsets.npy")[:-1])
    _set_offsets(folder, lambda o: None, record=True)


def _damage_line(folder, position, text):
    """Line ``position`` becomes ``text``, the other lines, offsets and hashes follow."""
    lines = (folder / "items.jsonl").read_bytes().split(b"\n")[:-1]
    lines[position] = text
    data = b"".join(line + b"\n" for line in lines)
    (folder / "items.jsonl").write_bytes(data)
    lengths = np.array([len(line) + 1 for line in lines])
    _set_offsets(folder, lambda o: o.__setitem__(slice(1, None), np.cumsum(lengths)), True)
    meta = sidecar(folder)
    meta["items_bytes"] = len(data)
    meta["items_sha256"] = items_file.hashlib.sha256(data).hexdigest()
    (folder / "index.json").write_text(json.dumps(meta))


# (damage, the message opening gives, or None when opening succeeds and reading item 3
# gives it). Each names the file; reading through HammingIndex.load gives LOAD_ERRORS.
OPEN_DAMAGE = {
    "items_truncated": (
        lambda f: _edit_file(f, "items.jsonl", lambda d: d[:-10]),
        r"items file .*idx/items\.jsonl has \d+ bytes, the sidecar says \d+",
    ),
    "items_missing": (
        lambda f: (f / "items.jsonl").unlink(),
        r"items file .*idx/items\.jsonl is missing or unreadable",
    ),
    "offsets_truncated": (
        lambda f: _edit_file(f, "items_offsets.npy", lambda d: d[:-8]),
        r"offsets file .*idx/items_offsets\.npy has \d+ bytes, the sidecar says \d+",
    ),
    "offsets_header_shorter": (
        lambda f: _shorten_offsets(f),
        r"offsets file .*idx/items_offsets\.npy holds uint64 \(40,\), expected little-endian "
        r"uint64 \(41,\)",
    ),
    "offsets_not_ending_at_the_size": (
        lambda f: _set_offsets(f, lambda o: o.__setitem__(-1, o[-1] - 1), True),
        r"offsets file .*idx/items_offsets\.npy is corrupted: it runs from 0 to \d+, the items "
        r"file has \d+ bytes",
    ),
    "offsets_not_starting_at_0": (
        lambda f: _set_offsets(f, lambda o: o.__setitem__(0, 1), True),
        r"offsets file .*idx/items_offsets\.npy is corrupted: it runs from 1 to",
    ),
    "offset_into_a_line": (
        lambda f: _set_offsets(f, lambda o: o.__setitem__(3, o[3] + 2), True),
        None,
    ),
    "offset_past_the_end": (
        lambda f: _set_offsets(f, lambda o: o.__setitem__(4, 10**9), True),
        None,
    ),
    "line_not_json": (lambda f: _damage_line(f, 3, b'{"id":"x","meta":'), None),
    "line_wrong_keys": (lambda f: _damage_line(f, 3, b'{"id":"x","metadata":{}}'), None),
    "line_not_an_object": (lambda f: _damage_line(f, 3, b"12"), None),
    "line_two_objects": (
        lambda f: _damage_line(f, 3, b'{"id":"x","meta":{}}{"id":"y","meta":{}}'),
        None,
    ),
    "line_not_utf8": (lambda f: _damage_line(f, 3, b'{"id":"\xff","meta":{}}'), None),
    "line_bad_id": (lambda f: _damage_line(f, 3, b'{"id":true,"meta":{}}'), None),
    "line_bad_path": (lambda f: _damage_line(f, 3, b'{"id":"x","meta":{"path":3}}'), None),
}
ITEM_ERRORS = {
    "offset_into_a_line": r"items file .*idx/items\.jsonl is corrupted at item 3: line \[\d+, "
    r"\d+\) does not start at a line break",
    "offset_past_the_end": r"offsets file .*idx/items_offsets\.npy is corrupted at item 3: "
    r"line \[\d+, 1000000000\) is not inside",
    "line_not_json": r"items file .*idx/items\.jsonl is corrupted at item 3 \(line 4\): not JSON",
    "line_wrong_keys": r'items\.jsonl is corrupted at item 3 \(line 4\): not an object with "id" '
    r'and "meta" only',
    "line_not_an_object": r"items\.jsonl is corrupted at item 3 \(line 4\): not an object with "
    r'"id" and "meta" only',
    "line_two_objects": r"items\.jsonl is corrupted at item 3 \(line 4\): not JSON \(one object, "
    r"then more\)",
    "line_not_utf8": r"items\.jsonl is corrupted at item 3 \(line 4\): not UTF-8",
    "line_bad_id": r"items\.jsonl is corrupted at item 3 \(line 4\): ids must be str or int, "
    r"got True",
    "line_bad_path": r"items\.jsonl is corrupted at item 3 \(line 4\): metadata 'path' of item 3 "
    r"\('x'\) is 3, not text",
}
LOAD_ERRORS = {
    "items_truncated": r"file .*idx/items\.jsonl has \d+ bytes, the sidecar says",
    "items_missing": r"file .*idx/items\.jsonl is missing or unreadable",
    "offsets_truncated": r"file .*idx/items_offsets\.npy has \d+ bytes, the sidecar says",
    "offsets_header_shorter": OPEN_DAMAGE["offsets_header_shorter"][1],
    "offsets_not_ending_at_the_size": OPEN_DAMAGE["offsets_not_ending_at_the_size"][1],
    "offsets_not_starting_at_0": OPEN_DAMAGE["offsets_not_starting_at_0"][1],
    "offset_into_a_line": r"offsets file .*idx/items_offsets\.npy does not match the lines of "
    r".*items\.jsonl at item 2",
    "offset_past_the_end": r"offsets file .*idx/items_offsets\.npy does not match the lines of "
    r".*items\.jsonl at item 3",
    **{k: v for k, v in ITEM_ERRORS.items() if k.startswith("line_")},
}


@pytest.mark.parametrize("damage", OPEN_DAMAGE, ids=OPEN_DAMAGE)
def test_damaged_items_are_named_on_opening_or_reading(folder, damage):
    corrupt, on_open = OPEN_DAMAGE[damage]
    corrupt(folder)
    if on_open is not None:
        with pytest.raises(IndexFormatError, match=on_open):
            MappedIndex.open(folder)
    else:
        mapped = MappedIndex.open(folder)
        assert mapped.item(0) == (0, {})  # the undamaged items still read
        with pytest.raises(IndexFormatError, match=ITEM_ERRORS[damage]):
            mapped.item(3)
        # Reading every item in order (ids, indexed_paths, an export) stops there too.
        at = r"idx/items(\.jsonl|_offsets\.npy) is corrupted at item [23]\b"
        with pytest.raises(IndexFormatError, match=at):
            list(mapped.entries())
    with pytest.raises(IndexFormatError, match=LOAD_ERRORS[damage]):
        HammingIndex.load(folder)
    with pytest.raises(IndexFormatError, match=LOAD_ERRORS[damage]):
        verify_index(folder)


def test_a_utf8_line_written_by_hand_reads_as_the_same_item(folder):
    """The writer escapes non-ASCII; a line holding raw UTF-8 is still JSON in UTF-8."""
    _damage_line(folder, 3, '{"id":"café","meta":{"label":"ü"}}'.encode())
    assert MappedIndex.open(folder).item(3) == ("café", {"label": "ü"})
    loaded = HammingIndex.load(folder)
    assert loaded.entries()[3] == ("café", {"label": "ü"}) and len(loaded) == 40


def test_duplicate_ids_are_found_by_load_and_verify_not_by_open(folder):
    edit_items(folder, lambda ids, meta: ids.__setitem__(2, ids[1]))
    match = r"items file .*idx/items\.jsonl lists duplicate ids \(first: 'case-0000001'\)"
    with pytest.raises(IndexFormatError, match=match):
        HammingIndex.load(folder)
    with pytest.raises(IndexFormatError, match=match):
        verify_index(folder)
    assert MappedIndex.open(folder).item(2) == (
        "case-0000001",
        {"path": "images/2.png", "label": "a"},
    )


def test_a_flipped_byte_in_the_items_is_found_by_verify(folder):
    _edit_file(folder, "items.jsonl", lambda d: d[:20] + b"X" + d[21:])
    with pytest.raises(IndexFormatError, match=r"items\.jsonl is corrupted: its sha256 differs"):
        verify_index(folder)


def test_format_1_folder_loads_searches_and_is_saved_as_format_2(tmp_path):
    query = np.array([246, 62, 217, 166, 238, 21, 91, 201], np.uint8)  # item 0's code
    expected = [("case-001", 0), (7, 31), ("café/ü.png", 32)]
    loaded = HammingIndex.load(FORMAT1)
    assert (loaded.ids, [m for _, m in loaded.entries()]) == (FORMAT1_IDS, FORMAT1_META)
    assert [(h.id, h.distance) for h in loaded.lookup(query, 3)] == expected
    mapped = MappedIndex.open(FORMAT1)
    assert (mapped.format_version, mapped.ids) == (1, FORMAT1_IDS)
    assert [mapped.item(p) for p in range(6)] == loaded.entries()
    assert [(h.id, h.distance) for h in mapped.lookup(query, 3)] == expected
    assert verify_index(FORMAT1)["items_sha256"] == ""
    loaded.save(tmp_path / "v2")
    assert sidecar(tmp_path / "v2")["format_version"] == 2
    assert sidecar(tmp_path / "v2")["created"] == sidecar(FORMAT1)["created"]
    assert MappedIndex.open(tmp_path / "v2").ids == FORMAT1_IDS
    assert [MappedIndex.open(tmp_path / "v2").item(p) for p in range(6)] == loaded.entries()


def test_an_empty_index_round_trips(tmp_path):
    index = HammingIndex(bits=64, fingerprint="enc-1+float")
    index.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "items.jsonl").read_bytes() == b""
    assert np.load(tmp_path / "idx" / "items_offsets.npy").tolist() == [0]
    assert len(HammingIndex.load(tmp_path / "idx")) == 0
    assert (
        len(MappedIndex.open(tmp_path / "idx")) == 0
        and MappedIndex.open(tmp_path / "idx").ids == []
    )


def test_open_reads_the_items_of_the_folder_it_read_the_sidecar_from(folder, tmp_path):
    """A writer replacing the folder after opening leaves the open index whole: the
    files were opened through one descriptor of the folder."""
    mapped = MappedIndex.open(folder)
    before = [mapped.item(p) for p in range(40)]
    other = HammingIndex(bits=64, fingerprint="enc-1+float")
    other.add([0] * 64, id="new", metadata={"path": "n.png"})
    other.save(folder)
    assert [mapped.item(p) for p in range(40)] == before
    assert MappedIndex.open(folder).ids == ["new"]
