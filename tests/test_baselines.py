"""Baselines: every loss and aggregation against values worked out by hand, and every
method trained and evaluated end to end on tiny phantoms."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from keras_ynet.baselines import BASELINES, aggregation
from keras_ynet.baselines.classification import Outputs, rank
from keras_ynet.baselines.ddmh import MomentumHashingModel, ddmh_loss, disentangled_triplet_loss
from keras_ynet.baselines.dpsh import dpsh_loss
from keras_ynet.baselines.drh import drh_loss, log_cosh
from keras_ynet.baselines.dsh import dsh_loss
from keras_ynet.baselines.networks import build_hash_network
from keras_ynet.baselines.runner import run_baseline
from keras_ynet.layers import RMACPooling
from keras_ynet.phantoms import make_phantoms
from keras_ynet.ranking_metrics import cosine_ranking
from keras_ynet.run_config import RunConfig

TINY_CONFIG = dict(
    epochs=1,
    image_size=64,
    batch_size=8,
    backbone="resnet",  # C5 holds 4 x 16 channels (the plain encoder's would hold 16)
    stem_filters=4,
    stage_widths=(4, 4, 4, 16),
    stage_blocks=(1, 1, 1, 1),
    augment=False,
)
U3 = np.array([[1.0, 1.0], [1.0, 1.0], [0.5, -1.0]], np.float32)
LABELS3 = np.array([0, 0, 1])


def values(terms):
    return {k: float(v) for k, v in terms.items()}


# ----------------------------------------------------------------------------- losses
def test_dpsh_loss_by_hand():
    """See the worked example in dpsh_loss's docstring."""
    t = values(dpsh_loss(LABELS3, U3, eta=1.0))
    assert t["likelihood"] == pytest.approx(0.488380, abs=1e-6)
    assert t["quantization"] == pytest.approx(0.25 / 3, abs=1e-6)
    assert t["loss"] == pytest.approx(0.571713, abs=1e-6)


def test_dpsh_loss_is_finite_for_large_inner_products():
    u = np.full((2, 256), 1.0, np.float32)  # theta = 128: a naive log(1 + e^theta) overflows
    t = values(dpsh_loss([0, 1], u))  # dissimilar pair: loss = log(1 + e^128) = 128
    assert math.isfinite(t["loss"]) and t["likelihood"] == pytest.approx(128.0, rel=1e-6)


def test_dsh_loss_by_hand():
    """See dsh_loss's docstring: bits 2, m = 4."""
    u = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]], np.float32)
    t = values(dsh_loss(LABELS3, u))
    assert t["contrastive"] == pytest.approx(1.0, abs=1e-6)
    assert t["regularizer"] == pytest.approx(2 / 3, abs=1e-6)
    assert t["loss"] == pytest.approx(1.0 + 0.01 * 2 / 3, abs=1e-6)
    # A dissimilar pair already 2k apart (opposite codes) costs nothing.
    assert float(dsh_loss([0, 1], np.array([[1, 1], [-1, -1]], np.float32))["contrastive"]) == 0


def test_drh_loss_by_hand():
    """See drh_loss's docstring."""
    kernel = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)
    t = values(drh_loss(LABELS3, U3, kernel, lambda_q=1.0, lambda_b=1.0, lambda_o=1.0))
    assert t["nca"] == pytest.approx(1 - 1 / (1 + math.exp(-4.25)), abs=1e-6)
    assert t["quantization"] == pytest.approx(math.log(math.cosh(0.5)) / 6, abs=1e-6)
    assert t["balance"] == pytest.approx((25 / 36 + 1 / 9) / 2, abs=1e-6)
    assert t["independence"] == pytest.approx(2.0, abs=1e-6)
    assert t["loss"] == pytest.approx(2.436860, abs=1e-5)
    assert float(log_cosh(np.float32(60.0))) == pytest.approx(60 - math.log(2), rel=1e-6)


def test_ddmh_triplet_loss_by_hand():
    """See disentangled_triplet_loss's docstring: one valid triplet, hinge 2."""
    anchor = np.array([[1.0, 1.0]], np.float32)
    memory = np.array([[1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], np.float32)
    memory_labels = np.array([0, 1, -1])
    loss = disentangled_triplet_loss(anchor, [0], memory, memory_labels, margin=1.0)
    assert float(loss) == pytest.approx(2.0, abs=1e-6)
    # Only directions matter: scaling codes does not change the loss.
    scaled = disentangled_triplet_loss(anchor * 0.1, [0], memory * 0.5, memory_labels, 1.0)
    assert float(scaled) == pytest.approx(2.0, abs=1e-5)
    # Excluding the only positive leaves no triplet.
    excluded = disentangled_triplet_loss(
        anchor, [0], memory, memory_labels, 1.0, exclude=np.array([[1, 0, 0]])
    )
    assert float(excluded) == 0.0
    # Total = triplet + 0.1 * mean((sgn u - u)^2): u = (1, 1) is already binary.
    assert float(ddmh_loss([0], anchor, memory, memory_labels, margin=1.0)["loss"]) == 2.0


# ----------------------------------------------------------------------------- aggregation
def test_mac_spoc_crow_by_hand():
    """Channel 0 = [[3, 0], [0, 0]], channel 1 = [[1, 0], [0, 4]] (see aggregation.crow)."""
    f = np.zeros((1, 2, 2, 2))
    f[0, 0, 0] = (3, 1)
    f[0, 1, 1] = (0, 4)
    np.testing.assert_allclose(aggregation.mac(f), [[0.6, 0.8]])  # max (3, 4)
    np.testing.assert_allclose(aggregation.spoc(f), [[3 / 34**0.5, 5 / 34**0.5]])  # sum (3, 5)
    np.testing.assert_allclose(aggregation.crow_channel_weights(f), [[math.log(3), math.log(1.5)]])
    np.testing.assert_allclose(
        aggregation.crow_spatial_weights(f)[0], [[2**-0.25, 0], [0, 2**-0.25]]
    )
    np.testing.assert_allclose(aggregation.crow(f), [[0.851760, 0.523932]], atol=1e-6)


def test_rmac_matches_the_rmac_pooling_layer():
    f = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 5)).astype(np.float32)
    layer = np.asarray(RMACPooling(levels=3)(f))
    np.testing.assert_allclose(aggregation.rmac(f), layer, atol=1e-5)


def test_class_activation_maps_and_online_cam_ranking():
    """Two classes; kernel picks channel 0 for class 0 and channel 1 for class 1."""
    f = np.zeros((1, 1, 2, 2))
    f[0, 0, 0] = (2, 0)
    f[0, 0, 1] = (1, 4)
    kernel = np.eye(2)
    cams = aggregation.class_activation_maps(f, kernel)
    np.testing.assert_allclose(cams[0, 0], [[1, 0]])  # class 0: (2, 1) -> (1, 0)
    np.testing.assert_allclose(cams[0, 1], [[0, 1]])  # class 1: (0, 4) -> (0, 1)
    # Class 0 weighting keeps position 0 only: (2, 0); no channel weighting -> (1, 0).
    v = aggregation.cam_class_vectors(f, kernel, channel_weighting=False)
    np.testing.assert_allclose(v[0], [[1, 0], [1 / 17**0.5, 4 / 17**0.5]])
    # Online aggregation: each query's top class weights the database images too.
    rng = np.random.default_rng(3)
    q_f, db_f = rng.uniform(0, 1, (2, 3, 3, 4)), rng.uniform(0, 1, (6, 3, 3, 4))
    kernel = rng.normal(size=(4, 2))
    queries = Outputs(q_f, np.array([[1.0, 0.0], [0.0, 1.0]]))  # top classes 0 and 1
    ranking = rank("cam", queries, Outputs(db_f, np.zeros((6, 2))), kernel)
    qv = aggregation.cam_class_vectors(q_f, kernel)
    dv = aggregation.cam_class_vectors(db_f, kernel)
    by_class = [cosine_ranking(qv[:, c], dv[:, c]) for c in (0, 1)]
    assert ranking[0].tolist() == by_class[0][0].tolist()
    assert ranking[1].tolist() == by_class[1][1].tolist()
    assert by_class[0][1].tolist() != by_class[1][1].tolist()  # the class choice matters
    assert aggregation.top_classes([[0.1, 0.9, 0.5]], 2).tolist() == [[1, 2]]


# ----------------------------------------------------------------------------- training
@pytest.mark.slow  # measured: several seconds; `make test` runs it
def test_ddmh_momentum_model_fills_its_queue_and_moves_its_average():
    keras.utils.set_random_seed(0)
    config = RunConfig(**TINY_CONFIG)
    network = build_hash_network((64, 64, 1), 32, config)
    model = MomentumHashingModel(network, queue_size=8, momentum=0.5)
    before = [np.array(w) for w in model.momentum_network.weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = np.random.default_rng(0).uniform(0, 255, (12, 64, 64, 1)).astype(np.float32)
    y = {"label": np.array([0, 1] * 6, np.int32)}
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert {"loss", "triplet", "quantization"} <= set(history.history)
    # 3 steps of 4 codes into a queue of 8: the pointer wrapped to 4, every slot filled.
    assert int(model.queue_pointer.numpy()) == 4
    assert sorted(np.asarray(model.queue_labels).tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    after = [np.array(w) for w in model.momentum_network.weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.slow
def test_every_baseline_trains_and_evaluates_on_phantoms(tmp_path):
    """All ten methods, 1 epoch, tiny encoder; aggregation methods share one classifier."""
    spec = make_phantoms(tmp_path / "ph", n_per_class=8, image_size=64, seed=0)
    config = RunConfig(data=str(tmp_path / "ph"), **TINY_CONFIG)
    shared = tmp_path / "classifier"
    weights_mtime = None
    for method in BASELINES:
        result = run_baseline(method, spec, config, tmp_path / method, classifier_dir=shared)
        report, descriptor = result["report"], result["descriptor"]
        expected = ("hash", 32 * 2) if method in ("dpsh", "dsh", "drh", "ddmh") else ("float", 64)
        assert (descriptor["kind"], descriptor["dim"]) == expected, method
        assert set(report.map) == {"retrieved", "all", "k"}
        assert all(0.0 <= v <= 1.0 for v in report.map["k"].values()), method
        assert report.vcdr_gap_at_10 is not None  # phantom fundus masks have disc and cup
        if descriptor["kind"] == "float":
            mtime = (shared / "classifier.weights.h5").stat().st_mtime_ns
            assert weights_mtime in (None, mtime), "the classifier was trained twice"
            weights_mtime = mtime
        else:
            assert (tmp_path / method / "network.weights.h5").is_file()
            assert 0.0 <= result["info"]["bit_balance_min"] <= result["info"]["bit_balance_max"]


@pytest.mark.slow
def test_classifier_row_codes_are_the_signs_of_its_float_row(tmp_path):
    """`classifier` (sign codes) and `classifier_float` (tanh values) are one network."""
    from keras_ynet.baselines import classifier_codes
    from keras_ynet.dataset_evaluation import evaluate_bits
    from keras_ynet.ranking_metrics import hamming_ranking

    spec = make_phantoms(tmp_path / "ph", n_per_class=8, image_size=64, seed=0)
    config = RunConfig(data=str(tmp_path / "ph"), bits=32, **TINY_CONFIG)
    coded = classifier_codes.run_classifier(spec, config, tmp_path / "classifier")
    assert coded["descriptor"] == {"kind": "hash", "dim": 32}
    floated = classifier_codes.evaluate_classifier_float(spec, config, tmp_path / "classifier")
    assert floated["descriptor"] == {"kind": "float", "dim": 32}
    # Reload the stored weights: the signs of the float row re-create the coded report.
    train_net, code_net = classifier_codes._networks(spec, config)
    train_net.load_weights(tmp_path / "classifier" / classifier_codes.WEIGHTS_FILE)
    q, d = classifier_codes._split_values(code_net, spec, config)
    q_bits, d_bits = (q > 0).astype(np.uint8), (d > 0).astype(np.uint8)
    again = evaluate_bits(spec, spec.split("test"), q_bits, spec.split("train"), d_bits)
    assert again.map == coded["report"].map
    assert hamming_ranking(q_bits, d_bits).shape == (len(q), len(d))
    with pytest.raises(RuntimeError, match="needs the finished classifier run"):
        classifier_codes.evaluate_classifier_float(spec, config, tmp_path / "nothing")


def test_plain_cnn_is_the_106k_reference_network():
    from keras_ynet.baselines.plain_cnn import build_plain_cnn

    train_net, code_net = build_plain_cnn((128, 128, 1), num_classes=3, bits=64)
    # convs 9*(1*16 + 16*32 + 32*64 + 64*128) = 96,912; batch norm 4*(16+32+64+128) = 960;
    # tanh layer 128*64 + 64 = 8,256; classifier 64*3 + 3 = 195.
    assert code_net.count_params() == 96_912 + 960 + 8_256
    assert train_net.count_params() == code_net.count_params() + 195
    assert code_net.output_shape == (None, 64)
    # Flips only while training: the code network has none, the training network's flip
    # is the identity at inference.
    x = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 1)).astype(np.float32)
    assert "flip" not in [layer.name for layer in code_net.layers]
    np.testing.assert_array_equal(
        np.asarray(train_net(x, training=False)),
        np.asarray(train_net.get_layer("logits")(code_net(x, training=False))),
    )


@pytest.mark.slow
def test_plain_cnn_row_trains_and_evaluates_on_phantoms(tmp_path):
    from keras_ynet.baselines.plain_cnn import run_plain_cnn

    spec = make_phantoms(tmp_path / "ph", n_per_class=8, image_size=64, seed=0)
    config = RunConfig(data=str(tmp_path / "ph"), **TINY_CONFIG)
    result = run_plain_cnn(spec, config, tmp_path / "plain")
    assert result["descriptor"] == {"kind": "hash", "dim": config.bits}
    first_conv = 9 * spec.channels * 16
    convs = first_conv + 9 * (16 * 32 + 32 * 64 + 64 * 128)
    dense = 128 * config.bits + config.bits + (config.bits + 1) * spec.num_classes
    assert result["info"]["parameters"] == convs + 960 + dense
    assert (tmp_path / "plain" / "history.csv").is_file()
