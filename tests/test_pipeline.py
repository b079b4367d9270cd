"""tf.data pipeline: shapes, nearest-neighbour masks, paired augmentation, determinism."""

import os

import numpy as np
import pytest

from keras_ynet.phantoms import make_phantoms
from keras_ynet.pipeline import augment_pair, make_dataset, prepare_image, resize_mask


@pytest.fixture(scope="module")
def fundus(tmp_path_factory):
    return make_phantoms(tmp_path_factory.mktemp("fundus"), n_per_class=4, image_size=32)


def first_batch(ds):
    images, targets = next(iter(ds))
    return images.numpy(), targets["label"].numpy(), targets["mask"].numpy()


def test_batches_have_the_documented_shapes(fundus):
    records = fundus.split("train")
    ds = make_dataset(fundus, records, 24, 1, 3, augment=True, shuffle=True, seed=0)
    images, labels, masks = first_batch(ds)
    assert images.shape == (3, 24, 24, 1) and images.dtype == np.float32
    assert labels.shape == (3,) and labels.dtype == np.int32
    assert masks.shape == (3, 24, 24) and masks.dtype == np.int32
    assert 0 <= images.min() and images.max() <= 255
    assert set(np.unique(masks)) <= {0, 1, 2}
    assert sum(len(b[1]["label"]) for b in ds) == len(records)


def test_plain_batches_keep_record_order(fundus):
    records = fundus.split("train")
    ds = make_dataset(fundus, records, 32, 3, 4, augment=False, shuffle=False, seed=0)
    labels = np.concatenate([t["label"].numpy() for _, t in ds])
    assert labels.tolist() == fundus.label_ids(records).tolist()


def test_same_seed_same_batches_and_epochs_differ(fundus):
    def make(seed):
        records = fundus.split("train")
        return make_dataset(fundus, records, 32, 3, 4, augment=True, shuffle=True, seed=seed)

    ds = make(5)
    epoch1, epoch2 = first_batch(ds), first_batch(ds)
    again = first_batch(make(5))
    for a, b in zip(epoch1, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(epoch1[0], epoch2[0])
    assert not np.array_equal(epoch1[0], first_batch(make(6))[0])


def test_nearest_resize_keeps_the_label_set():
    mask = np.random.default_rng(0).integers(0, 3, (32, 32)).astype(np.uint8)
    small = resize_mask(mask, 20)
    assert set(np.unique(small)) == {0, 1, 2}
    assert set(np.unique(resize_mask(small, 37))) == {0, 1, 2}


def test_channel_conversion():
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    rgb = prepare_image(grey, 4, 3)
    assert rgb.shape == (4, 4, 3) and (rgb == grey).all()  # replicated
    colour = np.zeros((3, 3, 3), np.uint8)
    colour[:, 0, 0] = colour[:, 1, 1] = colour[:, 2, 2] = 255  # red, green, blue columns
    # BT.601 luma: 0.299, 0.587, 0.114 of 255.
    assert prepare_image(colour, 3, 1)[..., 0].tolist() == [[76, 150, 29]] * 3
    big = np.full((40, 40, 3), 200, np.uint8)
    assert prepare_image(big, 16, 3).shape == (16, 16, 3)


def block_pair():
    mask = np.zeros((40, 40), np.int32)
    mask[5:20, 8:30], mask[22:36, 4:18], mask[25:38, 24:37] = 1, 2, 3
    return np.repeat((mask * 60.0)[..., None], 3, axis=-1), mask  # pixel value = 60 * label


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augmentation_moves_image_and_mask_together(seed):
    image, mask = block_pair()
    out_image, out_mask = augment_pair(image, mask, seed, brightness=0.0, contrast=0.0)
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert out_mask.dtype == np.int32 and set(np.unique(out_mask)) == {0, 1, 2, 3}
    assert not np.array_equal(out_mask, mask)  # it did transform
    # Away from label edges the bilinear image equals 60 * label exactly; there the
    # nearest-neighbour mask must carry the same label.
    clean = np.all(np.isclose(out_image, np.round(out_image / 60) * 60, atol=0.5), axis=-1)
    assert clean.mean() > 0.8
    agree = np.round(out_image[..., 0] / 60) == out_mask
    assert agree[clean].mean() > 0.99


def test_flip_and_photometric_jitter():
    image, mask = block_pair()
    kwargs = dict(max_rotation_deg=0.0, scale_range=(1.0, 1.0), brightness=0.0, contrast=0.0)
    flipped = [augment_pair(image, mask, s, **kwargs)[1].numpy() for s in range(8)]
    assert any(np.array_equal(m, mask[:, ::-1]) for m in flipped)
    assert all(np.array_equal(m, mask) or np.array_equal(m, mask[:, ::-1]) for m in flipped)
    never = [augment_pair(image, mask, s, flip=False, **kwargs)[1].numpy() for s in range(8)]
    assert all(np.array_equal(m, mask) for m in never)
    jittered, same_mask = augment_pair(image, mask, 0, flip=False, max_rotation_deg=0.0,
                                       scale_range=(1.0, 1.0))  # fmt: skip
    assert np.array_equal(same_mask.numpy(), mask)
    assert not np.allclose(jittered.numpy(), image)


def test_augmented_chest_masks_swap_their_lungs_when_flipped(tmp_path):
    """--augment flips by the rule of --flip: a mirrored right lung is labelled left."""
    chest = make_phantoms(tmp_path, n_per_class=2, image_size=32, kind="chest")
    n = len(chest.records)
    plain = make_dataset(chest, chest.records, 32, 1, n, augment=False, shuffle=False, seed=0)
    heart_x = [np.nonzero(m == 3)[1].mean() for m in first_batch(plain)[2]]
    ds = make_dataset(chest, chest.records, 32, 1, n, augment=True, shuffle=False, seed=0)
    flipped = 0
    for _ in range(2):
        _, _, masks = first_batch(ds)
        for m, x in zip(masks, heart_x, strict=True):
            # The right lung (1) lies on the image's left whether flipped or not.
            assert np.nonzero(m == 1)[1].mean() < 16 < np.nonzero(m == 2)[1].mean()
            # The heart sits right of centre; a flip moves it to the mirror position.
            new_x = np.nonzero(m == 3)[1].mean()
            flipped += abs(new_x - (31 - x)) < abs(new_x - x)
    assert 0 < flipped < 2 * n


def test_augment_flip_maps_mask_classes():
    image, mask = block_pair()
    kwargs = dict(max_rotation_deg=0.0, scale_range=(1.0, 1.0), brightness=0.0, contrast=0.0)
    table = [0, 2, 1, 3]
    outs = [
        augment_pair(image, mask, s, mirror_classes=table, **kwargs)[1].numpy() for s in range(8)
    ]
    mirrored = np.asarray(table)[mask[:, ::-1]]
    assert any(np.array_equal(m, mirrored) for m in outs)
    assert all(np.array_equal(m, mask) or np.array_equal(m, mirrored) for m in outs)


def test_each_file_is_decoded_once_per_process(tmp_path, monkeypatch):
    """Training, scoring, thresholds and evaluation share one decode per file (#12)."""
    from keras_ynet import pipeline
    from keras_ynet.phantoms import make_phantoms

    spec = make_phantoms(tmp_path / "ph", n_per_class=3, image_size=32, seed=0)
    calls = []
    real = pipeline.load_image
    monkeypatch.setattr(pipeline, "load_image", lambda p: calls.append(p) or real(p))
    pipeline._prepared.cache_clear()
    train = spec.split("train")
    first, _ = pipeline.load_arrays(train, 32, 1)
    again, _ = pipeline.load_arrays(spec.records, 32, 1)  # train split again, plus test
    assert len(calls) == len(spec.records)  # every file once, the train split not twice
    position = {r.id: i for i, r in enumerate(spec.records)}
    assert np.array_equal(again[[position[r.id] for r in train]], first)
    image = spec.records[0].image
    os.utime(image, ns=(1, 10**18))  # a file edited since: decoded again
    pipeline.load_arrays(spec.records[:1], 32, 1)
    assert len(calls) == len(spec.records) + 1


def test_mirror_pair_swaps_left_and_right_mask_classes():
    from keras_ynet.pipeline import mirror_pair

    image = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    # Chest classes: 0 background, 1 right lung, 2 left lung, 3 heart; 255 = no mask.
    mask = np.array([[1, 0, 2], [3, 255, 1]], np.int32)
    seen = set()
    for seed in range(8):
        out_image, out_mask = mirror_pair(image, mask, seed, [0, 2, 1, 3])
        out_image, out_mask = np.asarray(out_image)[..., 0], np.asarray(out_mask)
        if out_image[0, 0] == 2.0:  # flipped
            seen.add("flipped")
            assert out_image.tolist() == [[2, 1, 0], [5, 4, 3]]
            assert out_mask.tolist() == [[1, 0, 2], [2, 255, 3]]
        else:
            seen.add("kept")
            assert out_image.tolist() == image[..., 0].tolist()
            assert out_mask.tolist() == mask.tolist()
    assert seen == {"flipped", "kept"}


def test_balanced_batches_hold_the_classes_in_equal_shares(fundus):
    """1 image of one class and 3 of the other: every batch of 2 holds 1 of each, and
    the rare image comes back in every batch."""
    train = fundus.split("train")
    rare = [r for r in train if r.label == "glaucoma"][:1]
    common = [r for r in train if r.label == "normal"][:3]
    records = rare + common
    ds = make_dataset(fundus, records, 24, 1, 2, augment=False, shuffle=True, seed=0,
                      drop_remainder=True, balanced=True)  # fmt: skip
    for _ in range(2):  # two epochs
        batches = [b[1]["label"].numpy() for b in ds]
        assert len(batches) == 2  # an epoch still has len(records) images
        for labels in batches:
            assert sorted(labels.tolist()) == [0, 1]
    with pytest.raises(ValueError, match="need shuffle"):
        make_dataset(fundus, records, 24, 1, 2, augment=False, shuffle=False, seed=0,
                     balanced=True)  # fmt: skip
