"""Shared test fixtures: tiny model configurations and the shared-data location."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A YNet small enough for unit tests: 64x64 input, core node 2x2x64.
TINY = dict(
    input_shape=(64, 64, 1),
    num_classes=2,
    num_mask_classes=3,
    stem_filters=4,
    stage_widths=(4, 4, 4, 16),
    stage_blocks=(1, 1, 1, 1),
    fpn_channels=8,
    rmac_channels=16,
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Seeds Keras before every test and its fixtures (a module's shared model too).

    The layers of a YNet draw their initial weights from Keras's global generator, which
    is seeded per process at random: a test that compares the bits of an untrained model
    across runtimes would meet a value within float error of its threshold in some
    processes and not in others. Keras is seeded only where a test module imported it:
    the device tests run without TensorFlow.
    """
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(0)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


# One tiny YNet exported once per session on a 16-image phantom dataset (14 train, 2 test),
# shared by the device, report and image-format tests. Its Keras bits, computed from the
# images as training prepares them, are the reference for what the runtime returns.
@pytest.fixture(scope="session")
def art(tmp_path_factory):
    """Exported encoder folder, dataset and the Keras reference bits of every image."""
    import keras

    from deploy.preprocess import prepare_image
    from export.exporter import export_encoder
    from keras_ynet.dataset import load_image
    from keras_ynet.fingerprint import model_fingerprint
    from keras_ynet.model import YNet
    from keras_ynet.phantoms import make_phantoms
    from keras_ynet.pipeline import load_arrays
    from keras_ynet.saving import save_ynet
    from keras_ynet.ynet_codes import calibrate_bit_thresholds, encode_bits

    root = tmp_path_factory.mktemp("deploy")
    spec = make_phantoms(root / "data", n_per_class=8, image_size=64, seed=0)
    keras.utils.set_random_seed(0)
    model = YNet(**TINY, bits=64, class_names=spec.class_names)
    images, _ = load_arrays(spec.records, 64, 1)  # the training path: decode, resize, grey
    calibrate_bit_thresholds(model, images[[r.split == "train" for r in spec.records]])
    save_ynet(model, root / "model.keras")
    # The untrained tiny model's int8 copy may be flagged; the tests need it written.
    report = export_encoder(
        root / "model.keras", spec.root, root / "art", log=lambda m: None, keep_flagged_int8=True
    )
    bits = encode_bits(model, images)
    # Files unlike the training PNGs (another size, 16-bit grey, alpha), prepared the way
    # training prepares files, so the encoder must resize and convert them the same way.
    odd = make_odd_images(spec.records[0].image, root / "odd")
    odd_images = np.stack([prepare_image(load_image(p), 64, 1) for p in odd])
    return {
        "dir": root / "art",
        "data": spec.root,
        "ids": [r.id for r in spec.records],
        "paths": [r.image for r in spec.records],
        "split": [r.split for r in spec.records],
        "bits": dict(zip([r.id for r in spec.records], bits, strict=True)),
        "fingerprint": model_fingerprint(model),
        "int8_agreement": report["int8"]["bit_agreement"],
        "odd_paths": odd,
        "odd_bits": encode_bits(model, odd_images),
    }


def make_odd_images(source: Path, folder: Path) -> list[Path]:
    folder.mkdir()
    rgb = Image.open(source).convert("RGB")
    grey16 = (np.asarray(rgb.convert("L"), np.uint16) * 257 + 100).astype(np.uint16)
    images = {
        "large.png": rgb.resize((96, 80), Image.BICUBIC),
        "grey16.png": Image.fromarray(grey16),
        "rgba.png": rgb.convert("RGBA"),
    }
    for name, image in images.items():
        image.save(folder / name)
    return [folder / name for name in images]
