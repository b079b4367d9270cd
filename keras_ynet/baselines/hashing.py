"""Deep-hashing baselines on the shared encoder: DPSH, DSH, DRH and DDMH.

Each trains :func:`~keras_ynet.baselines.networks.build_hash_network` (encoder, global
average pool, dense to ``config.bits``, tanh) with its paper's loss (one module per
method); codes are the sign of the output, ranked by Hamming distance.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from keras_ynet.baselines import HASHING_METHODS, ddmh, dpsh, drh, dsh
from keras_ynet.baselines.networks import HASH_DENSE, build_hash_network, encode_codes
from keras_ynet.baselines.training import LossModel, fit_model
from keras_ynet.baselines.validation import validation_map_codes
from keras_ynet.dataset import DatasetSpec
from keras_ynet.dataset_evaluation import evaluate_bits
from keras_ynet.pipeline import load_arrays
from keras_ynet.training_data import prepare_training_data


def build_hashing_model(method: str, network: keras.Model) -> LossModel:
    """Wraps the hash network with the training loss of ``method``."""
    if method == "dpsh":
        return LossModel(
            network, lambda y, u, _: dpsh.dpsh_loss(y, u), ("likelihood", "quantization")
        )
    if method == "dsh":
        return LossModel(
            network, lambda y, u, _: dsh.dsh_loss(y, u), ("contrastive", "regularizer")
        )
    if method == "drh":

        def drh_fn(labels, u, net):
            return drh.drh_loss(labels, u, net.get_layer(HASH_DENSE).kernel)

        return LossModel(network, drh_fn, ("nca", "quantization", "balance", "independence"))
    if method == "ddmh":
        return ddmh.MomentumHashingModel(network)
    raise ValueError(f"unknown hashing method {method!r}; expected one of {HASHING_METHODS}")


def run_hashing(method: str, spec: DatasetSpec, config, out: Path, verbose: int = 0) -> dict:
    """Trains one hashing baseline and evaluates it on the test split.

    Args:
        method: one of :data:`HASHING_METHODS`.
        spec: the dataset.
        config: a :class:`keras_ynet.run_config.RunConfig` (shared run settings).
        out: folder for history.csv and the network weights.
        verbose: Keras fit verbosity.

    Returns:
        dict with ``report`` (RetrievalReport), ``info`` and ``descriptor``
        (``{"kind": "hash", "dim": bits}``).
    """
    keras.utils.set_random_seed(config.seed)
    data = prepare_training_data(spec, config)
    size = config.image_size
    network = build_hash_network((size, size, spec.channels), config.bits, config, config.seed)
    model = build_hashing_model(method, network)

    def score(net):
        return validation_map_codes(
            encode_codes(net, data.val_images), data.val_labels,
            encode_codes(net, data.fit_images), data.fit_labels,
        )  # fmt: skip

    info = fit_model(model, data, config, score, out, verbose=verbose)
    network.save_weights(out / "network.weights.h5")

    queries, database = spec.split("test"), spec.split("train")
    q_bits = encode_codes(network, load_arrays(queries, size, spec.channels)[0])
    db_bits = encode_codes(network, load_arrays(database, size, spec.channels)[0])
    ones = db_bits.mean(axis=0)
    info.update(
        bit_balance_min=float(ones.min()),
        bit_balance_max=float(ones.max()),
        distinct_codes=int(np.unique(db_bits, axis=0).shape[0]),
    )
    report = evaluate_bits(spec, queries, q_bits, database, db_bits)
    return {"report": report, "info": info, "descriptor": {"kind": "hash", "dim": config.bits}}
