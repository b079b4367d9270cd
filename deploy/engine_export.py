"""An index's codes as bulk NDJSON for a distributed search engine with binary vectors.

Past one machine, the codes can be served by an engine that stores bit vectors and
ranks by Hamming distance itself (docs/distributed_search.md). This module writes an
index folder in the two formats whose documentation fixes every byte:

* ``opensearch``: a ``knn_vector`` field with ``"data_type": "binary"``, ``"dimension"``
  = bits and ``"space_type": "hamming"`` (HNSW on the Faiss engine, the method the
  OpenSearch k-NN documentation gives for binary vectors, OpenSearch 2.16+); a code is a
  JSON array of signed int8, one per byte (``np.packbits(bits).astype(np.int8)``);
* ``elasticsearch``: a ``dense_vector`` field with ``"element_type": "bit"``, ``"dims"``
  = bits, ``"similarity": "l2_norm"`` (which for bit vectors is Hamming: score
  ``(bits - d) / bits``) and ``"index_options": {"type": "flat"}`` (brute force: exact);
  a code is a hexadecimal string, two digits per byte (Elasticsearch 8.15+).

Both read a packed code's bytes first bit first (MSB), as :func:`deploy.codes.pack_bits`
packs them, so the bytes of ``codes.npy`` go out unchanged. Each document holds
``code``, ``item_id`` (the index's id, as text), ``position`` (the insertion order: the
tie order of ``deploy`` search, kept so a client can reproduce it) and ``metadata``
(stored, not indexed); the mapping's ``_meta`` records the encoder's codes identity and
the bit length, so a client can refuse queries from another encoder.

The mapping goes to ``<out>.mapping.json`` (the body of ``PUT /<name>``) and the bulk
lines to ``<out>`` (the body of ``POST /_bulk``): an action line ``{"index": {"_index":
name, "_id": id}}`` then the document, per item, streamed from the memory-mapped codes.
Both files are written atomically. Only numpy and the standard library are imported.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from deploy import atomic
from deploy.mapped_index import MappedIndex

FORMATS = ("opensearch", "elasticsearch")
CODE_FIELD = "code"
MAPPING_SUFFIX = ".mapping.json"
# Index names both engines accept: lower case, no \ / * ? " < > | , # : or space, not
# starting with - _ +, not . or .. (their documented rules, OpenSearch follows Elasticsearch).
_NAME = re.compile(r"^(?![-_+])[a-z0-9_.+-]{1,255}$")
_CHUNK = 4096  # items read from the map and written at a time


def mapping(engine: str, bits: int, codes_id: str) -> dict[str, Any]:
    """The index-creation body for ``engine`` (``PUT /<name>``)."""
    if engine == "opensearch":
        vector = {
            "type": "knn_vector", "dimension": bits, "data_type": "binary",
            "space_type": "hamming", "method": {"name": "hnsw", "engine": "faiss"},
        }  # fmt: skip
        settings = {"settings": {"index": {"knn": True}}}
    elif engine == "elasticsearch":
        vector = {
            "type": "dense_vector", "dims": bits, "element_type": "bit", "index": True,
            "similarity": "l2_norm", "index_options": {"type": "flat"},
        }  # fmt: skip
        settings = {}
    else:
        raise ValueError(f"unknown engine format {engine!r}; expected one of {', '.join(FORMATS)}")
    return {
        **settings,
        "mappings": {
            "_meta": {"codes": codes_id, "bits": bits, "metric": "hamming"},
            "properties": {
                CODE_FIELD: vector,
                "item_id": {"type": "keyword"},
                "position": {"type": "long"},
                "metadata": {"type": "object", "enabled": False},
            },
        },
    }


def encode_code(engine: str, packed: np.ndarray) -> list[int] | str:
    """One packed code (uint8 bytes) as ``engine`` takes it in a document.

    Example:
        >>> code = np.array([0x6C, 0x8C, 0x81, 0x7F], np.uint8)
        >>> encode_code("opensearch", code), encode_code("elasticsearch", code)
        ([108, -116, -127, 127], '6c8c817f')
    """
    packed = np.asarray(packed, np.uint8)
    if engine == "opensearch":
        return packed.view(np.int8).tolist()
    if engine == "elasticsearch":
        return packed.tobytes().hex()
    raise ValueError(f"unknown engine format {engine!r}; expected one of {', '.join(FORMATS)}")


def bulk_lines(engine: str, index: MappedIndex, name: str) -> Iterator[str]:
    """The bulk NDJSON lines (action, document) of every item, in position order."""
    entries = index.entries()  # read sequentially, not one line per item
    for start in range(0, len(index), _CHUNK):
        stop = min(len(index), start + _CHUNK)
        rows = index.packed_codes(np.arange(start, stop))
        for position, code in zip(range(start, stop), rows, strict=True):
            item_id, metadata = next(entries)
            action = {"index": {"_index": name, "_id": str(item_id)}}
            document = {
                CODE_FIELD: encode_code(engine, code),
                "item_id": str(item_id),
                "position": position,
                "metadata": metadata,
            }
            yield json.dumps(action, ensure_ascii=False) + "\n"
            yield json.dumps(document, ensure_ascii=False) + "\n"


def check_name(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(
            f"engine index name {name!r} is not valid: use lower-case letters, digits, '_', "
            "'-', '+' or '.', not starting with '-', '_' or '+' (--name)"
        )
    return name


def export_engine(
    folder: str | os.PathLike, engine: str, out: str | os.PathLike, name: str,
    overwrite: bool = False,
) -> tuple[Path, Path, int]:  # fmt: skip
    """Writes ``out`` (bulk NDJSON) and ``out.mapping.json``; returns both and the count.

    Raises:
        FileExistsError: a file is there and ``overwrite`` is False.
        ValueError: an unknown engine or an invalid name; index errors as
            :meth:`deploy.mapped_index.MappedIndex.open`.
    """
    if engine not in FORMATS:
        raise ValueError(f"unknown engine format {engine!r}; expected one of {', '.join(FORMATS)}")
    check_name(name)
    index = MappedIndex.open(folder)
    out = Path(out)
    mapping_path = out.with_name(out.name + MAPPING_SUFFIX)
    for path in (out, mapping_path):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; add --overwrite to replace it")
    body = mapping(engine, index.bits, index.fingerprint)
    with atomic.atomic_path(out, overwrite) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in bulk_lines(engine, index, name):
            f.write(line)
    atomic.atomic_write_text(mapping_path, json.dumps(body, indent=1) + "\n")
    return out, mapping_path, len(index)
