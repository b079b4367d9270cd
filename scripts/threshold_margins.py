"""How close a trained Y-Net's hash values come to their bit thresholds.

A value within float rounding of its threshold is a bit two runtimes may set differently
(export/parity.py counts such a bit as a tie instead of failing the export). For each
model: how many of its (images x bits) values over the whole dataset lie within 1e-5 and
1e-4 of their thresholds, and the smallest distance.

    python scripts/threshold_margins.py ../shared/data/rimone_dl RUN [RUN ...]
"""

from __future__ import annotations

import sys

import numpy as np

from export.parity import prepare_records
from keras_ynet.dataset import load_dataset
from keras_ynet.saving import load_ynet
from keras_ynet.ynet_codes import hash_pre_activations


def main(data: str, runs: list[str]) -> None:
    spec = load_dataset(data)
    for run in runs:
        model = load_ynet(f"{run}/model.keras")
        size, _, channels = model.input_shape_
        images = prepare_records(spec.records, size, channels).astype(np.float32)
        distance = np.abs(
            hash_pre_activations(model, images) - model.get_layer("hash").thresholds.numpy()
        )
        print(
            f"{run}: {distance.size} values, within 1e-5: {int(np.sum(distance < 1e-5))}, "
            f"within 1e-4: {int(np.sum(distance < 1e-4))}, smallest {distance.min():.2g}"
        )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
