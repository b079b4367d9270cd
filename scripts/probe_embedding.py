"""Where a trained Y-Net's retrieval is lost: its codes, its float embedding, and other
poolings of the same features, each ranked on the test split against the train split.

    python scripts/probe_embedding.py --data ../shared/data/jsrt RUN [RUN ...]

Prints mAP@10 (convention k) per run for: the 64-bit codes (Hamming), the float R-MAC
embedding, global average and global max pooling of the R-MAC convolution's output, and
global average pooling of the core node that convolution reads (all by cosine). The codes
close to the embedding say the hash head keeps what the embedding has; the poolings close
to R-MAC say the pooling is not what limits it (docs/results.md, sixth session).
"""

from __future__ import annotations

import argparse

import keras

from keras_ynet.dataset import load_dataset
from keras_ynet.pipeline import load_arrays
from keras_ynet.ranking_metrics import cosine_ranking, map_at_k, map_at_k_from_ranking
from keras_ynet.saving import load_ynet
from keras_ynet.ynet_codes import encode_bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder (labels.csv layout)")
    parser.add_argument("runs", nargs="+", help="run folders holding model.keras")
    args = parser.parse_args()
    spec = load_dataset(args.data)
    queries, database = spec.split("test"), spec.split("train")
    q_labels, d_labels = spec.label_ids(queries), spec.label_ids(database)
    print(
        "| run | codes | float R-MAC embedding | GAP of R-MAC conv | GMP of R-MAC conv | GAP of core node |"
    )
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        model = load_ynet(f"{run}/model.keras")
        size, channels = model.input_shape[1], model.input_shape[3]
        q_images, _ = load_arrays(queries, size, channels)
        d_images, _ = load_arrays(database, size, channels)
        codes = map_at_k(
            encode_bits(model, q_images), q_labels, encode_bits(model, d_images), d_labels, 10, "k"
        )
        conv = model.get_layer("rmac_conv")
        probe = keras.Model(
            model.input,
            {
                "core": conv.input,
                "conv": conv.output,
                "embedding": model.get_layer("embedding").output,
            },
        )
        q, d = probe.predict(q_images, verbose=0), probe.predict(d_images, verbose=0)
        views = {
            "embedding": (q["embedding"], d["embedding"]),
            "gap_conv": (q["conv"].mean(axis=(1, 2)), d["conv"].mean(axis=(1, 2))),
            "gmp_conv": (q["conv"].max(axis=(1, 2)), d["conv"].max(axis=(1, 2))),
            "gap_core": (q["core"].mean(axis=(1, 2)), d["core"].mean(axis=(1, 2))),
        }
        scores = [
            map_at_k_from_ranking(cosine_ranking(qv, dv), q_labels, d_labels, 10, "k")
            for qv, dv in views.values()
        ]
        print(
            f"| {run.rstrip('/').split('/')[-1]} | {codes:.3f} | "
            + " | ".join(f"{s:.3f}" for s in scores)
            + " |"
        )


if __name__ == "__main__":
    main()
