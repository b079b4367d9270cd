"""Golden vectors for a host port: images, their expected inputs and codes, and the
expected top-k over an index of them (``golden.json`` in the export folder).

Two kinds of images:

* synthetic PNGs made here (smooth random fields, seeded, so the same for every export
  of a given input size), copied into ``golden/`` in the export folder: they are the
  project's own, and chosen to run every decoding and resizing path a host implements
  (exact size, shrink, enlarge, the vertical-first resize order, 16-bit grey, RGBA);
* a few test-split images of the dataset, referenced by their dataset-relative path
  only: research images are never copied, only their ids, file sha256 and codes stored.

A host checks itself by preparing each image it can read (comparing the sha256 of the
prepared model input, then the packed code), and by searching an index of the golden
codes (in ``search.index_ids`` order) with each one and comparing the hits. See
``export/README.md`` (golden vectors) and ``node deploy/node/search.js --check``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from deploy.encoder import Encoder
from deploy.index import HammingIndex

GOLDEN_FILE = "golden.json"
GOLDEN_DIR = "golden"
FORMAT_VERSION = 1
TOP_K = 5
DATASET_IMAGES = 4


def synthetic_images(size: int, seed: int = 0) -> dict[str, Image.Image]:
    """name -> image; each a smooth field (bicubic-enlarged random grid), so codes differ."""
    rng = np.random.default_rng(seed)

    def field(width: int, height: int, channels: int, peak: int = 255) -> np.ndarray:
        layers = []
        for _ in range(channels):
            grid = Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8))
            layers.append(np.asarray(grid.resize((width, height), Image.BICUBIC), np.float64))
        return np.stack(layers, -1) * (peak / 255.0)

    big, small = (3 * size) // 2, size // 2 + 3
    grey16 = np.round(field(size + 7, size - 5, 1, 65535)[..., 0]).astype(np.uint16)
    return {
        "g0_grey_exact.png": Image.fromarray(field(size, size, 1)[..., 0].astype(np.uint8)),
        "g1_rgb_shrink.png": Image.fromarray(field(big, (5 * size) // 4, 3).astype(np.uint8)),
        "g2_grey_enlarge.png": Image.fromarray(field(small, small, 1)[..., 0].astype(np.uint8)),
        # Narrower and taller than S: the vertical pass runs first (export/README.md).
        "g3_rgb_tall.png": Image.fromarray(field(size // 2 + 1, 2 * size, 3).astype(np.uint8)),
        "g4_grey16.png": Image.fromarray(grey16),
        "g5_rgba.png": Image.fromarray(field(size, size, 4).astype(np.uint8), "RGBA"),
    }


def write_golden(folder: Path, records, root: Path) -> dict:
    """Writes ``golden/`` and ``golden.json`` into the export ``folder`` (with its
    ``encoder.onnx`` and ``encoder.json``) and returns the golden document.

    Args:
        records: dataset records (``id``, ``image``) to reference; the first
            ``DATASET_IMAGES`` are used.
        root: the dataset folder their paths are made relative to.
    """
    encoder = Encoder.open(folder / "encoder.onnx")
    (folder / GOLDEN_DIR).mkdir()
    images = []
    for name, image in synthetic_images(encoder.image_size).items():
        image.save(folder / GOLDEN_DIR / name)
        rel = f"{GOLDEN_DIR}/{name}"
        images.append(_entry(encoder, rel, rel, folder / rel, "export"))
    for record in records[:DATASET_IMAGES]:
        rel = Path(os.path.relpath(record.image, root)).as_posix()
        images.append(_entry(encoder, str(record.id), rel, Path(record.image), "dataset"))
    index = HammingIndex(bits=encoder.bits, fingerprint=encoder.codes_id, backend="exact")
    index.batch_add(
        np.stack([np.frombuffer(bytes.fromhex(im["code"]), np.uint8) for im in images]),
        [im["id"] for im in images],
    )
    k = min(TOP_K, len(images))
    queries = [
        {
            "query": im["id"],
            "hits": [
                {"rank": h.rank, "id": h.id, "distance": h.distance}
                for h in index.lookup(np.frombuffer(bytes.fromhex(im["code"]), np.uint8), k)
            ],
        }
        for im in images
    ]
    document = {
        "format_version": FORMAT_VERSION,
        "contract": "encoder.json",
        "model": encoder.model_path.name,
        "codes": encoder.codes_id,
        "bits": encoder.bits,
        "input": {"size": encoder.image_size, "channels": encoder.channels},
        "images": images,
        "search": {"k": k, "index_ids": index.ids, "queries": queries},
    }
    (folder / GOLDEN_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return document


def _entry(encoder: Encoder, image_id: str, rel: str, path: Path, where: str) -> dict:
    prepared = encoder.prepare(path)
    code = encoder._run(prepared[None])[0]
    return {
        "id": image_id,
        "path": rel,
        "in": where,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input_sha256": hashlib.sha256(np.ascontiguousarray(prepared).tobytes()).hexdigest(),
        "code": code.tobytes().hex(),
    }
