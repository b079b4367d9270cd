"""The ``classifier`` rows: what a user would train instead of Y-Net.

The shared encoder, global average pooling, a dense layer to ``config.bits`` with tanh,
and a linear softmax classifier on those tanh values, trained with cross-entropy alone
(no pairwise, metric or segmentation loss) at the run's step budget. This is the recipe
of a plain CNN classifier whose penultimate tanh layer gives the codes:

* ``classifier``: codes = sign of the tanh layer, ranked by Hamming distance;
* ``classifier_float``: the same trained network's tanh values (the float penultimate
  features), ranked by cosine. It reads the stored ``classifier`` run and trains
  nothing.

Y-Net has to beat these rows to be worth its extra branches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from keras import layers

from keras_ynet.baselines.networks import build_hash_network, encode_codes
from keras_ynet.baselines.training import LossModel, fit_model
from keras_ynet.baselines.validation import validation_map_codes
from keras_ynet.dataset import DatasetSpec
from keras_ynet.dataset_evaluation import evaluate_bits, evaluate_descriptors
from keras_ynet.pipeline import load_arrays
from keras_ynet.training_data import prepare_training_data

WEIGHTS_FILE = "classifier_codes.weights.h5"


def build_classifier_codes(input_shape, num_classes: int, bits: int, config, seed: int = 0):
    """(training network image -> logits, code network image -> tanh values in (-1, 1))."""
    code_net = build_hash_network(input_shape, bits, config, seed)
    logits = layers.Dense(
        num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name="logits"
    )(code_net.output)
    return keras.Model(code_net.input, logits, name="classifier_codes"), code_net


def cross_entropy(labels, logits, _network) -> dict:
    ce = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return {"loss": keras.ops.mean(ce)}


def _networks(spec: DatasetSpec, config):
    keras.utils.set_random_seed(config.seed)
    size = config.image_size
    shape = (size, size, spec.channels)
    return build_classifier_codes(shape, spec.num_classes, config.bits, config, config.seed)


def run_classifier(
    spec: DatasetSpec, config, out: Path, verbose: int = 0, networks: Callable | None = None
) -> dict:
    """Trains the classifier (checkpoint: validation mAP@10 of its codes) and evaluates
    its sign codes on the test split; saves the weights for ``classifier_float``.

    ``networks(spec, config)`` -> (training network, code network) replaces the shared
    encoder's (the ``plain_cnn`` row passes its own).
    """
    data = prepare_training_data(spec, config)
    train_net, code_net = (networks or _networks)(spec, config)

    def score(_net):
        return validation_map_codes(
            encode_codes(code_net, data.val_images), data.val_labels,
            encode_codes(code_net, data.fit_images), data.fit_labels,
        )  # fmt: skip

    info = fit_model(LossModel(train_net, cross_entropy), data, config, score, out, verbose=verbose)
    train_net.save_weights(Path(out) / WEIGHTS_FILE)
    queries, database = _split_values(code_net, spec, config)
    q_bits, db_bits = (queries > 0).astype(np.uint8), (database > 0).astype(np.uint8)
    info["distinct_codes"] = int(np.unique(db_bits, axis=0).shape[0])
    report = evaluate_bits(spec, spec.split("test"), q_bits, spec.split("train"), db_bits)
    return {"report": report, "info": info, "descriptor": {"kind": "hash", "dim": config.bits}}


def evaluate_classifier_float(spec: DatasetSpec, config, classifier_folder: Path) -> dict:
    """The stored ``classifier`` run's tanh values ranked by cosine (trains nothing)."""
    weights = Path(classifier_folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise RuntimeError(f"classifier_float needs the finished classifier run {weights}")
    train_net, code_net = _networks(spec, config)
    train_net.load_weights(weights)
    queries, database = _split_values(code_net, spec, config)
    report = evaluate_descriptors(spec, spec.split("test"), queries, spec.split("train"), database)
    info = {"source_run": Path(classifier_folder).name}
    return {"report": report, "info": info, "descriptor": {"kind": "float", "dim": config.bits}}


def _split_values(code_net, spec: DatasetSpec, config):
    size = config.image_size
    images = [load_arrays(spec.split(s), size, spec.channels)[0] for s in ("test", "train")]
    return [code_net.predict(x.astype(np.float32), batch_size=32, verbose=0) for x in images]
