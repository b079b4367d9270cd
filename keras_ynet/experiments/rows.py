"""What each experiment holds: the rows of Table II and Table III and the CV candidates.

A Y-Net row is a set of run settings over the shared base (a field of
:class:`keras_ynet.run_config.RunConfig` -> its value); a baseline row is a method of
:mod:`keras_ynet.baselines`. Rows with identical settings share one stored run
(:mod:`keras_ynet.experiments.runs`).
"""

from __future__ import annotations

from keras_ynet.baselines import BASELINES
from keras_ynet.run_config import PRESETS

# Y-Net rows of Table II, as settings over the shared base (the same runs as the Table III
# rows of those settings): the default Y-Net (chosen by cross-validation, docs/results.md)
# and the paper's. ynet_embedding: the float R-MAC embedding of the ynet run, by cosine
# (float rows are compared with float rows; it trains nothing).
TABLE2_YNET_ROWS = {
    "ynet": {},
    "ynet_paper": dict(PRESETS["paper"]),
}
# classifier / classifier_float: the same encoder trained with softmax cross-entropy alone,
# by its sign codes and by its float tanh features (keras_ynet.baselines.classifier_codes).
# plain_cnn: a 106k-parameter plain CNN classifier with flips, its own network
# (keras_ynet.baselines.plain_cnn).
TABLE2_METHODS = (
    *BASELINES, "classifier", "classifier_float", "plain_cnn", *TABLE2_YNET_ROWS,
    "ynet_embedding",
)  # fmt: skip
# Ablations of the default Y-Net (``ynet``): each changes one thing.
TABLE3_ROWS = {
    "ynet": {},
    "paper": dict(PRESETS["paper"]),
    # Without segmentation guidance: the FPN loss weighted 0 (the branch still runs, its
    # mask head untrained).
    "no_seg": {"coupling": "fixed", "coupling_weights": (1.0, 0.0), "seg_guidance": "on"},
    # The segmentation loss trains the encoder (the paper's way) / only the mask head on
    # detached features, whatever the train split's masks say (the default is auto).
    "seg_on": {"seg_guidance": "on"},
    "seg_detached": {"seg_guidance": "off"},
    # Without classification guidance (the R-MAC branch trains nothing).
    "no_rmac": {"variant": "no_rmac"},
    # Circle loss instead of cross-entropy as the classification guidance.
    "circle": {"variant": "ynet"},
    "coupling_alpha": {"coupling": "alpha"},
    "coupling_fixed": {"coupling": "fixed"},
    "bits32": {"bits": 32},
    "bits64": {"bits": 64},
    "bits128": {"bits": 128},
    "bits256": {"bits": 256},
    # The hash read from the core-node grid (the paper's head, trained) instead.
    "grid_head": {"hash_head": "trained"},
    # Without the mirror flips of training.
    "no_flip": {"flip": False},
    # The wide ResNet (the fourth session's encoder) in place of the plain encoder.
    "resnet_encoder": {
        "backbone": "resnet",
        "stem_filters": 32,
        "stage_widths": (16, 32, 64, 128),
        "stem_stride": 4,
    },  # fmt: skip
}
# Candidates of the cross-validated choice of the default (``--cv-folds``): the presets
# of keras_ynet.run_config. Ties go to the earlier entry.
CV_CANDIDATES = PRESETS
TITLES = {
    "table2": "Table II: baselines and Y-Net on one split",
    "table3": "Table III: Y-Net ablations on one split",
}
PLOTS = {"table2": "map_vs_k.png", "table3": "table3_map_vs_k.png"}
