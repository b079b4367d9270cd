"""Regional attention (Kim & Yoon, BMVC 2018: "Regional attention based deep feature
for image retrieval") on the classification-trained encoder.

The paper keeps R-MAC's regions but replaces their plain sum with a learned weighting:
a small context-aware attention network looks at each region's max-pooled feature
together with a global context of the image and outputs a non-negative weight; the
weighted sum of the L2-normalised region vectors, L2-normalised, is the descriptor.
The attention network is trained for classification with the backbone frozen.

Where we had to choose:
* the global context is the mean of the image's L2-normalised region vectors;
* attention = Dense(hidden, ReLU) -> Dense(1, softplus) on [region, context], with
  hidden = channels / 2; the classifier is a linear softmax layer on the weighted sum
  (before its L2 normalisation);
* it trains on feature maps of the frozen classifier computed once without
  augmentation, for ``config.epochs`` epochs, with the same optimiser and the same
  validation checkpoint rule as every baseline.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from keras_ynet.baselines.classification import Outputs, predict
from keras_ynet.baselines.training import LossModel, fit_model
from keras_ynet.baselines.validation import validation_map_ranking
from keras_ynet.layers import l2_normalize, rmac_regions
from keras_ynet.ranking_metrics import cosine_ranking
from keras_ynet.training_data import TrainingData

DESCRIPTOR = "descriptor"
LEVELS = 3


def region_vectors(features: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Max-pooled R-MAC region vectors, (N, regions, C), not normalised."""
    features = np.asarray(features, np.float32)
    regions = rmac_regions(features.shape[1], features.shape[2], levels)
    return np.stack(
        [features[:, t : t + h, x : x + w, :].max(axis=(1, 2)) for t, x, h, w in regions], axis=1
    )


def build_attention_network(num_regions: int, channels: int, num_classes: int, seed: int = 0):
    """Regions (N, R, C) -> {"descriptor": (N, C) unit vectors, "logits": (N, classes)}."""
    init = keras.initializers.GlorotUniform
    regions = keras.Input((num_regions, channels), name="regions")
    unit = l2_normalize(regions)
    context = ops.repeat(ops.mean(unit, axis=1, keepdims=True), num_regions, axis=1)
    hidden = layers.Dense(
        max(channels // 2, 1), activation="relu", kernel_initializer=init(seed), name="att_hidden"
    )(ops.concatenate([unit, context], axis=-1))
    weights = layers.Dense(
        1, activation="softplus", kernel_initializer=init(seed + 1), name="att_weight"
    )(hidden)
    pooled = ops.sum(weights * unit, axis=1)
    logits = layers.Dense(num_classes, kernel_initializer=init(seed + 2), name="att_classifier")(
        pooled
    )
    descriptor = layers.Identity(name=DESCRIPTOR)(l2_normalize(pooled))
    return keras.Model(regions, {DESCRIPTOR: descriptor, "logits": logits}, name="attention")


def _loss(labels, outputs, _network):
    ce = keras.losses.sparse_categorical_crossentropy(labels, outputs["logits"], from_logits=True)
    return {"loss": ops.mean(ce)}


def describe(network: keras.Model, regions: np.ndarray) -> np.ndarray:
    return np.asarray(network.predict(regions, batch_size=64, verbose=0)[DESCRIPTOR])


def rank_regional_attention(
    classifier: keras.Model,
    data: TrainingData,
    queries: Outputs,
    database: Outputs,
    config,
    out: Path,
    verbose: int = 0,
) -> tuple[np.ndarray, dict]:
    """Trains the attention network on frozen features; ranks the queries by cosine.

    Args:
        classifier: the trained classifier network (frozen here).
        data: the fit/validation cut of the train split (images are read from it).
        queries: classifier outputs of the test split.
        database: classifier outputs of the train split.
        config: run settings (epochs, batch size, optimiser, seed).
        out: folder for history.csv and the attention weights.

    Returns:
        (ranking (Q, N), training info)
    """
    keras.utils.set_random_seed(config.seed)
    fit_regions = region_vectors(predict(classifier, data.fit_images).features)
    val_regions = region_vectors(predict(classifier, data.val_images).features)
    _, num_regions, channels = fit_regions.shape
    network = build_attention_network(num_regions, channels, data.spec.num_classes, config.seed)
    batch = min(config.batch_size, len(fit_regions))
    dataset = (
        tf.data.Dataset.from_tensor_slices((fit_regions, {"label": data.fit_labels}))
        .shuffle(len(fit_regions), seed=config.seed)
        .batch(batch, drop_remainder=True)
    )
    feature_data = TrainingData(
        spec=data.spec, fit_records=data.fit_records, val_records=data.val_records,
        fit_images=fit_regions, val_images=val_regions, fit_labels=data.fit_labels,
        val_labels=data.val_labels, batch_size=batch, dataset=dataset,
    )  # fmt: skip

    def score(net):
        ranking = cosine_ranking(describe(net, val_regions), describe(net, fit_regions))
        return validation_map_ranking(ranking, data.val_labels, data.fit_labels)

    info = fit_model(LossModel(network, _loss), feature_data, config, score, out, verbose=verbose)
    network.save_weights(out / "attention.weights.h5")
    q_desc = describe(network, region_vectors(queries.features))
    db_desc = describe(network, region_vectors(database.features))
    info["regions"] = int(num_regions)
    return cosine_ranking(q_desc, db_desc), info
