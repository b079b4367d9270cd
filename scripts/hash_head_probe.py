"""Where do Y-Net's 64-bit codes lose retrieval quality? A probe on a trained model.

Freezes a trained Y-Net and retrains only a hash head on its features (circle loss on
the unit-normalised hash values + quantisation, the same terms as the ``trained`` head),
from two places:

* ``core``: the core node grid, a per-cell linear map (the model's own head layout);
* ``embedding``: the float R-MAC embedding, one dense map to ``bits`` values.

Both are thresholded like the model (per-bit midpoints fitted on the train split) and
ranked by Hamming distance; the model's own codes and its float embedding (cosine) are
printed beside them, all on the same test-vs-train split.

    python scripts/hash_head_probe.py --model RUN/model.keras --data ../shared/data/rimone_dl
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
from keras import ops

from keras_ynet import losses
from keras_ynet.dataset import load_dataset
from keras_ynet.dataset_evaluation import evaluate_bits, evaluate_descriptors
from keras_ynet.hash_head import fit_bit_thresholds
from keras_ynet.pipeline import load_arrays
from keras_ynet.saving import load_ynet
from keras_ynet.ynet_codes import encode_bits


def train_head(features, labels, bits, steps, seed):
    """Fits a linear head (per grid cell when features are 4-D) full-batch with AdamW."""
    keras.utils.set_random_seed(seed)
    x_in = keras.Input(features.shape[1:])
    if len(features.shape) == 4:
        cells = features.shape[1] * features.shape[2]
        y = keras.layers.Conv2D(bits // cells, 1)(x_in)
        y = keras.layers.Flatten()(y)
    else:
        y = keras.layers.Dense(bits)(x_in)
    head = keras.Model(x_in, y)
    optimizer = keras.optimizers.AdamW(1e-3, weight_decay=1e-4)
    x, t = ops.convert_to_tensor(features), ops.convert_to_tensor(labels)
    import tensorflow as tf

    for _ in range(steps):
        with tf.GradientTape() as tape:
            h = keras.activations.tanh(head(x))
            unit = h / ops.sqrt(ops.sum(ops.square(h), axis=-1, keepdims=True) + 1e-6)
            loss = losses.circle_loss(t, unit) + losses.quantization_loss(h)
        grads = tape.gradient(loss, head.trainable_weights)
        optimizer.apply(grads, head.trainable_weights)
    return head


def pca_itq(train, bits, iterations, seed):
    """PCA to ``bits`` dimensions, then ITQ (Gong & Lazebnik 2011): the orthogonal
    rotation that minimises the quantisation error to the nearest binary corner.
    Returns a function features -> {0, 1} bits (thresholds: train medians)."""
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    projection = vt[:bits].T
    v = (train - mean) @ projection
    rotation = np.linalg.qr(np.random.default_rng(seed).normal(size=(bits, bits)))[0]
    for _ in range(iterations):
        b = np.where(v @ rotation > 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(b.T @ v)
        rotation = (u @ wt).T
    w = projection @ rotation
    median = np.median((train - mean) @ w, axis=0)
    return lambda x: (((x - mean) @ w) > median).astype(np.uint8)


def to_bits(head, train_features, features):
    thresholds = fit_bit_thresholds(np.asarray(head(train_features)))
    return (np.asarray(head(features)) > thresholds).astype(np.uint8)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model = load_ynet(args.model)
    spec = load_dataset(args.data)
    queries, database = spec.split("test"), spec.split("train")
    size, channels = model.input_shape[1], model.input_shape[3]
    q_img = load_arrays(queries, size, channels)[0].astype("float32")
    d_img = load_arrays(database, size, channels)[0].astype("float32")
    core = model.get_layer("hash_aggregate").input
    probe = keras.Model(model.input, [core, model.get_layer("embedding").output])
    (q_core, q_emb), (d_core, d_emb) = (
        probe.predict(q_img, verbose=0),
        probe.predict(d_img, verbose=0),
    )
    labels = spec.label_ids(database)

    rows = {
        "model's own head (Hamming)": evaluate_bits(
            spec, queries, encode_bits(model, q_img), database, encode_bits(model, d_img)
        ),
        "float embedding (cosine)": evaluate_descriptors(spec, queries, q_emb, database, d_emb),
    }
    bits = model.bits
    for name, (q_f, d_f) in {"core": (q_core, d_core), "embedding": (q_emb, d_emb)}.items():
        head = train_head(d_f, labels, bits, args.steps, args.seed)
        rows[f"retrained head on {name} (Hamming)"] = evaluate_bits(
            spec, queries, to_bits(head, d_f, q_f), database, to_bits(head, d_f, d_f)
        )
    for name, iterations in (("PCA", 0), ("PCA + ITQ", 50)):
        encode = pca_itq(d_emb, bits, iterations, args.seed)
        rows[f"{name} of the embedding (Hamming)"] = evaluate_bits(
            spec, queries, encode(q_emb), database, encode(d_emb)
        )
    for name, report in rows.items():
        d = report.to_dict()["map"]
        print(f"{name:40s} mAP@10 (c) {d['k']['10']:.4f}  (a) {d['retrieved']['10']:.4f}")


if __name__ == "__main__":
    main()
