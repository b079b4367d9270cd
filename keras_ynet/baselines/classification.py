"""Aggregation baselines: descriptors pooled from a classification-trained encoder.

One network per seed (:func:`~keras_ynet.baselines.networks.build_classifier`: the
shared encoder, global average pooling, a softmax classifier) is trained with
cross-entropy; its last conv map is then aggregated by MAC, SPoC, R-MAC, CroW, CAM
weighting (:mod:`keras_ynet.baselines.aggregation`) or regional attention
(:mod:`keras_ynet.baselines.regional_attention`). Every aggregation method of one seed
reuses the same trained classifier (its weights are saved once and loaded back).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np

from keras_ynet.baselines import aggregation
from keras_ynet.baselines.networks import FEATURES, LOGITS, build_classifier
from keras_ynet.baselines.training import LossModel, fit_model
from keras_ynet.baselines.validation import validation_map_ranking
from keras_ynet.dataset import DatasetSpec
from keras_ynet.pipeline import load_arrays
from keras_ynet.ranking_metrics import cosine_ranking
from keras_ynet.training_data import prepare_training_data

AGGREGATORS = {
    "mac": aggregation.mac,
    "spoc": aggregation.spoc,
    "rmac": aggregation.rmac,
    "crow": aggregation.crow,
}
CAM_TOP_CLASSES = 1
WEIGHTS_FILE = "classifier.weights.h5"
INFO_FILE = "classifier_info.json"


def classification_loss(labels, outputs, _network) -> dict:
    """Softmax cross-entropy on the classifier logits."""
    ce = keras.losses.sparse_categorical_crossentropy(labels, outputs[LOGITS], from_logits=True)
    return {"loss": keras.ops.mean(ce)}


@dataclasses.dataclass
class Outputs:
    """Feature maps (N, H, W, C) and logits (N, classes) of some images."""

    features: np.ndarray
    logits: np.ndarray


def predict(network: keras.Model, images: np.ndarray, batch_size: int = 32) -> Outputs:
    out = network.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return Outputs(np.asarray(out[FEATURES]), np.asarray(out[LOGITS]))


def classifier_kernel(network: keras.Model) -> np.ndarray:
    """The (C, classes) kernel of the bias-free classifier (CAM weights)."""
    return np.asarray(network.get_layer("classifier").kernel)


def rank(method: str, queries: Outputs, database: Outputs, kernel: np.ndarray) -> np.ndarray:
    """Ranks the database for every query with the descriptor of ``method``.

    CAM uses the online aggregation of Jimenez et al. 2017: the query's top predicted
    class(es) choose the CAMs of the query *and* of every database image, so database
    descriptors are built per query class (cheap: few classes).
    """
    if method in AGGREGATORS:
        describe = AGGREGATORS[method]
        return cosine_ranking(describe(queries.features), describe(database.features))
    if method != "cam":
        raise ValueError(f"unknown aggregation {method!r}")
    q_vectors = aggregation.cam_class_vectors(queries.features, kernel)
    db_vectors = aggregation.cam_class_vectors(database.features, kernel)
    q_classes = aggregation.top_classes(queries.logits, CAM_TOP_CLASSES)
    ranking = np.empty((len(q_classes), len(db_vectors)), np.int64)
    for combo in np.unique(q_classes, axis=0):
        rows = np.flatnonzero((q_classes == combo).all(axis=1))
        q_desc = aggregation.sum_class_vectors(q_vectors[rows], q_classes[rows])
        db_desc = aggregation.sum_class_vectors(db_vectors, np.tile(combo, (len(db_vectors), 1)))
        ranking[rows] = cosine_ranking(q_desc, db_desc)
    return ranking


def train_or_load_classifier(
    spec: DatasetSpec, config, folder: Path, verbose: int = 0
) -> tuple[keras.Model, dict]:
    """The classifier of these settings: trained once, then loaded from ``folder``.

    Checkpoints are chosen by validation mAP@10 of SPoC descriptors (cosine), the
    classifier's plainest retrieval read-out.
    """
    size = config.image_size
    keras.utils.set_random_seed(config.seed)
    network = build_classifier((size, size, spec.channels), spec.num_classes, config, config.seed)
    weights, info_path = folder / WEIGHTS_FILE, folder / INFO_FILE
    if weights.is_file() and info_path.is_file():
        network.load_weights(weights)
        return network, json.loads(info_path.read_text())
    data = prepare_training_data(spec, config)

    def score(net):
        val, fit = predict(net, data.val_images), predict(net, data.fit_images)
        ranking = rank("spoc", val, fit, classifier_kernel(net))
        return validation_map_ranking(ranking, data.val_labels, data.fit_labels)

    model = LossModel(network, classification_loss)
    info = fit_model(model, data, config, score, folder, verbose=verbose)
    network.save_weights(weights)
    info_path.write_text(json.dumps(info, indent=2))
    return network, info


def split_outputs(network: keras.Model, spec: DatasetSpec, config) -> tuple[Outputs, Outputs]:
    """Classifier outputs of the test split (queries) and the train split (database)."""
    size = config.image_size
    queries = predict(network, load_arrays(spec.split("test"), size, spec.channels)[0])
    database = predict(network, load_arrays(spec.split("train"), size, spec.channels)[0])
    return queries, database
