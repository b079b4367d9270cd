"""YNet graph: outputs of every variant and bit length, config and save/load identity."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import TINY

from keras_ynet.hash_head import fit_bit_thresholds, hash_grid
from keras_ynet.layers import rmac_regions
from keras_ynet.model import VARIANTS, YNet
from keras_ynet.saving import load_ynet, save_ynet
from keras_ynet.ynet_codes import calibrate_bit_thresholds, encode_bits, hash_pre_activations


def images(n=4, seed=0, shape=(64, 64, 1)):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits", [32, 64, 128, 256])
def test_outputs_named_and_shaped(variant, bits):
    model = YNet(**TINY, bits=bits, variant=variant)
    out = model(images(2), training=False)
    assert set(out) == {"embedding", "mask", "hash"}
    assert tuple(out["embedding"].shape) == (2, 16)
    assert tuple(out["mask"].shape) == (2, 64, 64, 3)
    assert tuple(out["hash"].shape) == (2, bits)
    norms = np.linalg.norm(np.asarray(out["embedding"]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    h = np.asarray(out["hash"])
    assert np.all(np.abs(h) <= 1.0)


def test_stem_stride_2_doubles_the_resolution_of_every_stage(tmp_path):
    coarse = YNet(**TINY, hash_head="embedding")
    fine = YNet(**TINY, hash_head="embedding", stem_stride=2)
    assert fine.count_params() == coarse.count_params()  # the max-pool has no weights
    assert "stem_pool" not in [layer.name for layer in fine.layers]
    for stage in ("c2_block1_out", "c5_block1_out"):  # TINY has one block per stage
        assert fine.get_layer(stage).output.shape[1] == 2 * coarse.get_layer(stage).output.shape[1]
    assert tuple(fine(images(1))["mask"].shape) == (1, 64, 64, 3)
    save_ynet(fine, tmp_path / "m.keras")
    assert load_ynet(tmp_path / "m.keras").get_config()["stem_stride"] == 2
    with pytest.raises(ValueError, match="stem_stride"):
        YNet(**TINY, stem_stride=3)


@pytest.mark.parametrize("head", ["mean", "conv", "trained", "embedding", "combined"])
def test_hash_heads_build(head):
    model = YNet(**TINY, hash_head=head)
    assert model(images(1))["hash"].shape == (1, 64)
    assert ("hash_loss" in model.tracker_names) == (head in ("trained", "embedding", "combined"))


@pytest.mark.slow  # measured: several seconds; `make test` runs it
def test_embedding_head_reads_the_embedding_and_has_no_grid(tmp_path):
    import tensorflow as tf

    from keras_ynet.hash_head import model_hash_grid

    model = YNet(**TINY, hash_head="embedding", class_names=["a", "b"])
    assert model_hash_grid(model) is None  # its bits have no image region
    assert model_hash_grid(YNet(**TINY)) == (2, 2, 16, 0)
    x = tf.constant(images(4))
    with tf.GradientTape(persistent=True) as tape:
        out = model(x, training=True)
        hash_sum = tf.reduce_sum(out["hash"])
    # The hash trains only its own dense map: no gradient into the encoder.
    assert tape.gradient(hash_sum, model.get_layer("hash_aggregate").kernel) is not None
    assert tape.gradient(hash_sum, model.get_layer("rmac_conv").kernel) is None
    # The hash is a function of the embedding alone.
    dense = model.get_layer("hash_aggregate")
    pre = np.asarray(dense(model(x, training=False)["embedding"]))
    np.testing.assert_allclose(pre, hash_pre_activations(model, images(4)), atol=1e-5)
    calibrate_bit_thresholds(model, images(6))
    loaded = load_ynet(save_ynet(model, tmp_path / "m.keras"))
    np.testing.assert_array_equal(encode_bits(model, images(3)), encode_bits(loaded, images(3)))


def test_combined_head_reads_the_embedding_then_the_grid():
    import tensorflow as tf

    from keras_ynet.hash_head import model_hash_grid

    model = YNet(**TINY, hash_head="combined")
    # 32 bits from the embedding, then the 2 x 2 core node's cells of 8 bits each.
    assert model_hash_grid(model) == (2, 2, 8, 32)
    x = tf.constant(images(4))
    out = model(x, training=False)
    pre = hash_pre_activations(model, images(4))
    dense = model.get_layer("hash_aggregate")
    np.testing.assert_allclose(pre[:, :32], np.asarray(dense(out["embedding"])), atol=1e-5)
    region = model.get_layer("hash_region_flatten")
    grid_part = keras.Model(model.input, region.output).predict(images(4), verbose=0)
    np.testing.assert_allclose(pre[:, 32:], grid_part, atol=1e-5)
    with tf.GradientTape() as tape:
        hash_sum = tf.reduce_sum(model(x, training=True)["hash"])
    kernels = ["hash_aggregate", "hash_region_aggregate", "rmac_conv", "stem_conv"]
    grads = tape.gradient(hash_sum, [model.get_layer(name).kernel for name in kernels])
    # Both parts train; the hash loss reaches neither the embedding nor the encoder.
    assert grads[0] is not None and grads[1] is not None
    assert grads[2] is None and grads[3] is None


def test_rmac_regions_on_the_paper_grid():
    # 8x8 core node, L=3: 1 full region, 2x2 regions of side 5, 3x3 of side 4.
    regions = rmac_regions(8, 8, levels=3)
    sides = sorted({r[2] for r in regions})
    assert sides == [4, 5, 8]
    assert len(regions) == 1 + 4 + 9
    assert (3, 3, 5, 5) in regions and (4, 4, 4, 4) in regions


def test_hash_grid_matches_the_paper():
    assert hash_grid(8, 8, 64) == (1, 1, 8, 8, 1)  # 256x8x8 -> 1x8x8
    assert hash_grid(8, 8, 256) == (1, 1, 8, 8, 4)
    assert hash_grid(8, 8, 32) == (2, 1, 4, 8, 1)  # pool the grid for 32 bits
    assert hash_grid(2, 2, 256) == (1, 1, 2, 2, 64)


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="bits"):
        YNet(**TINY, bits=48)
    with pytest.raises(ValueError, match="variant"):
        YNet(**TINY, variant="nope")
    with pytest.raises(ValueError, match="input_shape"):
        YNet(**{**TINY, "input_shape": (64, 64, 2)})


def test_config_round_trip():
    model = YNet(**TINY, bits=128, variant="no_circle", class_names=["a", "b"])
    clone = YNet.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()


def test_save_load_identity(tmp_path):
    model = YNet(**TINY, coupling="alpha", class_names=["normal", "glaucoma"])
    x = images(6)
    calibrate_bit_thresholds(model, x)
    path = save_ynet(model, tmp_path / "m.keras")
    loaded = load_ynet(path)
    a, b = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in ("embedding", "mask", "hash"):
        np.testing.assert_array_equal(a[name], b[name])
    assert loaded.class_names == ["normal", "glaucoma"]
    np.testing.assert_array_equal(
        loaded.get_layer("hash").thresholds.numpy(), model.get_layer("hash").thresholds.numpy()
    )
    assert float(loaded.loss_coupling.alpha.numpy()) == 0.5


def test_failed_save_keeps_previous_model(tmp_path, monkeypatch):
    model = YNet(**TINY)
    path = save_ynet(model, tmp_path / "m.keras")
    before = path.read_bytes()

    def broken_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half a zip")
        raise RuntimeError("disk full")

    monkeypatch.setattr(YNet, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_ynet(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temp file left
    load_ynet(path)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_ynet(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="bad.keras"):
        load_ynet(bad)


def test_bit_thresholds_balance_the_training_codes():
    """Without centring every bit of a ReLU-fed mean head is 1; with it, half are."""
    keras.utils.set_random_seed(0)
    # 256 channels on the core node, as in the paper, so each bit averages 64 channels.
    model = YNet(**{**TINY, "stage_widths": (4, 4, 4, 64)}, hash_head="mean")
    x = images(21, seed=3)
    # A channel mean of ReLU outputs is never negative: no bit could ever be 0 but for
    # exact zeros. That is the failure the thresholds fix.
    assert hash_pre_activations(model, x).min() >= 0.0
    calibrate_bit_thresholds(model, x)
    balance = encode_bits(model, x).mean(axis=0)
    assert np.all((balance >= 0.3) & (balance <= 0.7))
    assert np.median(balance) == pytest.approx(11 / 21)  # 21 images: 11 above the split


def test_fit_bit_thresholds_by_hand():
    values = np.array([[1.0, 10.0], [3.0, 30.0], [2.0, 20.0], [4.0, 40.0]])
    # sorted column 0: 1,2,3,4 -> midpoint of 2 and 3 = 2.5; column 1 -> 25.
    np.testing.assert_allclose(fit_bit_thresholds(values), [2.5, 25.0])
    with pytest.raises(ValueError):
        fit_bit_thresholds(values[:1])


def test_model_is_registered_for_safe_mode():
    assert keras.saving.get_registered_object("keras_ynet>YNet") is YNet


@pytest.mark.slow  # measured: several seconds; `make test` runs it
def test_plain_keras_loads_a_saved_model_after_import_keras_ynet(tmp_path):
    """`import keras_ynet` is enough for keras.saving.load_model (issue #9, item 6)."""
    import subprocess
    import sys

    model = YNet(**TINY, hash_head="guided", variant="no_circle")
    save_ynet(model, tmp_path / "model.keras")
    expected = np.asarray(model(images(1))["hash"])
    np.save(tmp_path / "x.npy", images(1))
    script = (
        "import sys, keras, numpy as np, keras_ynet\n"
        f"m = keras.saving.load_model({str(tmp_path / 'model.keras')!r})\n"
        "assert type(m) is keras_ynet.YNet, type(m)\n"
        f"h = np.asarray(m(np.load({str(tmp_path / 'x.npy')!r}))['hash'])\n"
        f"np.save({str(tmp_path / 'h.npy')!r}, h)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "h.npy"), expected, atol=1e-6)


def test_plain_backbone_stages_and_parameters():
    settings = {**TINY, "stage_widths": (16, 32, 64, 128)}
    model = YNet(**settings, backbone="plain", hash_head="embedding")
    # One 3x3 convolution per stage, each followed by a 2x2 max-pool: strides 2, 4, 8, 16.
    sizes = [model.get_layer(f"c{s}_plain_pool").output.shape[1] for s in (2, 3, 4, 5)]
    assert sizes == [32, 16, 8, 4]
    assert model.get_layer("c2_plain_conv").count_params() == 9 * 1 * 16
    assert model.get_layer("c5_plain_conv").count_params() == 9 * 64 * 128
    assert tuple(model(images(1))["mask"].shape) == (1, 64, 64, 3)
    assert YNet.from_config(model.get_config()).get_config()["backbone"] == "plain"
    with pytest.raises(ValueError, match="backbone"):
        YNet(**TINY, backbone="vgg")


@pytest.mark.parametrize("trains_encoder", [True, False])
def test_segmentation_loss_reaches_the_encoder_only_when_guidance_is_on(trains_encoder, tmp_path):
    import tensorflow as tf

    from keras_ynet.losses import segmentation_loss

    model = YNet(**TINY, hash_head="embedding", seg_trains_encoder=trains_encoder)
    x = images(2)
    masks = np.random.default_rng(1).integers(0, 3, (2, 64, 64))
    with tf.GradientTape() as tape:
        loss = segmentation_loss(masks, model(x, training=True)["mask"])
    variables = model.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables), strict=True))

    def reached(prefix):
        hits = [g for path, g in grads.items() if path.startswith(prefix)]
        assert hits, prefix
        return any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in hits)

    assert reached("mask") and reached("fpn_lateral2")  # the mask head learns either way
    assert reached("stem_conv") == trains_encoder  # the encoder only with guidance on
    # Detached, the forward pass is unchanged and the setting survives saving.
    twin = YNet(**TINY, hash_head="embedding", seg_trains_encoder=not trains_encoder)
    twin.set_weights(model.get_weights())
    np.testing.assert_array_equal(
        model.predict(x, verbose=0)["mask"], twin.predict(x, verbose=0)["mask"]
    )
    loaded = load_ynet(save_ynet(model, tmp_path / "m.keras"))
    assert loaded.get_config()["seg_trains_encoder"] is trains_encoder


def test_circle_ce_sums_both_guidances_with_the_set_circle_loss():
    """variant circle_ce: circle loss and cross-entropy on the embedding; every circle
    term (the guidance and the trained hash head's) uses the model's gamma and margin."""
    from keras_ynet import losses
    from keras_ynet.layers import l2_normalize

    model = YNet(**TINY, variant="circle_ce", hash_head="embedding", circle_gamma=16.0,
                 circle_margin=0.3)  # fmt: skip
    outputs = model(images(4), training=False)
    labels = np.array([0, 1, 0, 1])
    terms = model.loss_terms({"label": labels, "mask": np.zeros((4, 64, 64), np.int32)}, outputs)
    circle = losses.circle_loss(labels, l2_normalize(outputs["embedding"]), 16.0, 0.3)
    ce = losses.classification_loss(labels, model.classifier(outputs["embedding"]))
    np.testing.assert_allclose(float(terms["cls"]), float(circle) + float(ce), rtol=1e-5)
    h = outputs["hash"]
    hash_term = losses.circle_loss(labels, l2_normalize(h), 16.0, 0.3) + losses.quantization_loss(h)
    np.testing.assert_allclose(float(terms["hash"]), float(hash_term), rtol=1e-5)
    # The paper's gamma and margin give another value: the settings reach the loss.
    paper = losses.circle_loss(labels, l2_normalize(h))
    assert abs(float(paper) - float(losses.circle_loss(labels, l2_normalize(h), 16.0, 0.3))) > 1e-3
    clone = YNet.from_config(model.get_config())
    assert (clone.circle_gamma, clone.circle_margin, clone.variant) == (16.0, 0.3, "circle_ce")
