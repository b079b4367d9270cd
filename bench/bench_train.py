"""Training throughput of the default Y-Net on this CPU.

Usage:
    python bench/bench_train.py [--image-size 256] [--batch-size 16] [--steps 20]

Prints images/s and the implied seconds per epoch on RIM-ONE DL (393 images after the
validation fold). Random images and masks are used: throughput does not depend on
content. The first steps (graph tracing) are excluded.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

RIMONE_TRAIN_IMAGES = 393  # 437 train-split images minus the 10% validation fold


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variant", default="ynet")
    a = p.parse_args(argv)

    import keras
    import tensorflow as tf

    from keras_ynet.model import YNet

    keras.utils.set_random_seed(0)
    s, b = a.image_size, a.batch_size
    model = YNet(
        input_shape=(s, s, a.channels), num_classes=2, num_mask_classes=3, variant=a.variant
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (b, s, s, a.channels)).astype(np.float32)
    y = {"label": np.arange(b) % 2, "mask": rng.integers(0, 3, (b, s, s))}
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(ds, shuffle=False, steps_per_epoch=a.warmup, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, shuffle=False, steps_per_epoch=a.steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    rate = a.steps * b / seconds
    print(
        f"Y-Net {a.variant}, {model.count_params():,} parameters, {s}px x {a.channels} ch, "
        f"batch {b}, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} "
        f"intra-op threads"
    )
    print(f"train step: {seconds / a.steps * 1000:.0f} ms/batch, {rate:.1f} images/s")
    print(
        f"one RIM-ONE DL epoch ({RIMONE_TRAIN_IMAGES} images): {RIMONE_TRAIN_IMAGES / rate:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
