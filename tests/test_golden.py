"""golden.json, written by every export: images, their inputs and codes, and the top-k."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from deploy import codes
from deploy.preprocess import load_prepared


def test_golden_vectors_match_keras_and_brute_force(art):
    golden = json.loads((art["dir"] / "golden.json").read_text())
    assert (golden["format_version"], golden["bits"], golden["contract"]) == (1, 64, "encoder.json")
    assert golden["codes"] == f"{art['fingerprint']}+float"
    assert golden["input"] == {"size": 64, "channels": 1}
    images = golden["images"]
    test_ids = [i for i, s in zip(art["ids"], art["split"], strict=True) if s == "test"]
    assert [im["id"] for im in images] == [
        "golden/g0_grey_exact.png", "golden/g1_rgb_shrink.png", "golden/g2_grey_enlarge.png",
        "golden/g3_rgb_tall.png", "golden/g4_grey16.png", "golden/g5_rgba.png", *test_ids,
    ]  # fmt: skip
    for im in images:
        folder = art["dir"] if im["in"] == "export" else art["data"]
        path = folder / im["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == im["sha256"]
        prepared = load_prepared(path, 64, 1)
        assert hashlib.sha256(prepared.tobytes()).hexdigest() == im["input_sha256"]
    # Dataset images: only referenced (nothing copied), and their codes are Keras's bits.
    assert sorted(p.name for p in (art["dir"] / "golden").iterdir()) == sorted(
        im["path"].split("/")[1] for im in images if im["in"] == "export"
    )
    for im in images[6:]:
        assert im["in"] == "dataset" and im["path"] == f"images/{im['id']}.png"
        assert im["code"] == codes.pack_bits(art["bits"][im["id"]][None])[0].tobytes().hex()
    # The expected top-k: brute force over the golden codes, ties by index order.
    packed = np.stack([np.frombuffer(bytes.fromhex(im["code"]), np.uint8) for im in images])
    dist = codes.hamming_distance_matrix(codes.unpack_bits(packed), codes.unpack_bits(packed))
    search = golden["search"]
    assert search["k"] == 5 and search["index_ids"] == [im["id"] for im in images]
    for row, query in zip(dist, search["queries"], strict=True):
        order = np.argsort(row, kind="stable")[:5]
        assert query["hits"] == [
            {"rank": r + 1, "id": images[j]["id"], "distance": int(row[j])}
            for r, j in enumerate(order)
        ]
    assert len({im["code"] for im in images}) > 4  # the images give different codes
