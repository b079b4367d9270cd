"""Run settings: a dataclass written as JSON next to every trained model.

:class:`RunConfig` is the one declaration of a training run's settings: its fields carry
their help text and choices, and :func:`add_run_arguments` turns them into the flags of
``python -m keras_ynet.train`` and ``python -m keras_ynet.experiments``, so a new setting
is added here and nowhere else. The names of the model's options live here too (no
TensorFlow is imported), and :mod:`keras_ynet.model` checks its arguments against them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from deploy.contract import VALID_BITS

# The model's options, named once (keras_ynet.model, keras_ynet.losses and
# keras_ynet.hash_head import them from here).
VARIANTS = ("ynet", "no_fpn", "no_rmac", "no_circle", "circle_ce")
COUPLINGS = ("alpha", "uncertainty", "fixed")
# Whether the segmentation loss trains the encoder: on (the paper), off (the mask head
# trains on detached features), auto (off when the train split's masks say little about
# its labels: keras_ynet.mask_signal).
SEG_GUIDANCE = ("on", "off", "auto")
HASH_HEADS = ("mean", "conv", "trained", "embedding", "guided", "combined")
# How training is spread over devices (keras_ynet.distribute builds the tf.distribute
# strategy of each; docs/distributed_training.md).
DISTRIBUTE_MODES = ("none", "mirrored", "multiworker")
# Downsampling of the encoder's stem (keras_ynet.backbone): 4 = ResNet's 7x7/2 convolution
# and 3x3/2 max-pool, 2 = the max-pool dropped (twice the resolution into every stage).
STEM_STRIDES = (4, 2)
# Encoders (keras_ynet.backbone): ResNet with bottleneck blocks, or a plain CNN.
BACKBONES = ("resnet", "plain")
# Named sets of settings (``--preset NAME``), also the candidates of the cross-validated
# choice of the default (``python -m keras_ynet.experiments cv``). Each names every
# setting it is about, so a later change of the defaults does not change what a preset
# (or a stored run of it) means. ``paper`` is the paper's Y-Net as built here.
_NARROW = {
    "backbone": "resnet", "stem_filters": 16, "stage_widths": (8, 16, 32, 64), "stem_stride": 4,
    "rmac_channels": 512,
}  # fmt: skip
_WIDE = {
    "backbone": "resnet", "stem_filters": 32, "stage_widths": (16, 32, 64, 128), "stem_stride": 4,
    "rmac_channels": 512,
}  # fmt: skip
PRESETS = {
    "paper": {
        "variant": "ynet",
        "hash_head": "trained",
        "augment": False,
        "flip": False,
        **_NARROW,
    },
    "ce_grid": {
        "variant": "no_circle",
        "hash_head": "trained",
        "augment": False,
        "flip": False,
        **_NARROW,
    },
    "ce_embedding": {
        "variant": "no_circle",
        "hash_head": "embedding",
        "augment": False,
        "flip": False,
        **_NARROW,
    },
    "ce_guided": {
        "variant": "no_circle",
        "hash_head": "guided",
        "augment": False,
        "flip": False,
        **_NARROW,
    },
    "circle_guided": {
        "variant": "ynet",
        "hash_head": "guided",
        "augment": False,
        "flip": False,
        **_NARROW,
    },
    "ce_guided_augment": {
        "variant": "no_circle",
        "hash_head": "guided",
        "augment": True,
        "flip": False,
        **_NARROW,
    },
    "ce_guided_wide": {
        "variant": "no_circle",
        "hash_head": "guided",
        "augment": False,
        "flip": False,
        **_WIDE,
    },
    "ce_embedding_wide": {
        "variant": "no_circle",
        "hash_head": "embedding",
        "augment": False,
        "flip": False,
        **_WIDE,
    },
    # The wide encoder without the stem's max-pool: twice the resolution into every stage.
    "ce_embedding_wide_s2": {
        "variant": "no_circle",
        "hash_head": "embedding",
        "augment": False,
        "flip": False,
        **_WIDE,
        "stem_stride": 2,
    },
    # The plain CNN encoder (one 3x3 convolution and a max-pool per stage, 16..128
    # filters: full resolution into the first convolution, 97k weights) with random
    # mirror flips: the recipe of the plain classifier that beats the ResNet rows on
    # JSRT, with Y-Net's branches on top.
    "ce_embedding_plain_flip": {
        "variant": "no_circle",
        "hash_head": "embedding",
        "augment": False,
        "flip": True,
        "backbone": "plain",
        "stage_widths": (16, 32, 64, 128),
        "rmac_channels": 512,
    },
    "ce_embedding_plain": {
        "variant": "no_circle",
        "hash_head": "embedding",
        "augment": False,
        "flip": False,
        "backbone": "plain",
        "stage_widths": (16, 32, 64, 128),
        "rmac_channels": 512,
    },
    # The wide encoder regularised against fitting a few hundred images: decoupled weight
    # decay 0.05 (ConvNeXt's) instead of 1e-4, and label smoothing 0.1.
    "ce_embedding_wide_reg": {
        "variant": "no_circle",
        "hash_head": "embedding",
        "augment": False,
        "flip": False,
        **_WIDE,
        "weight_decay": 0.05,
        "label_smoothing": 0.1,
    },
}
# Every preset so far keeps the segmentation guidance on the encoder (the paper's way).
for _preset in PRESETS.values():
    _preset.setdefault("seg_guidance", "on")
# The default with the segmentation guidance decided by the train split's masks.
PRESETS["ce_embedding_plain_flip_auto"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "seg_guidance": "auto",
}
# The default with the classifier row's recipe for the bits: cross-entropy read from the
# hash values (the guided head), the segmentation guidance kept.
PRESETS["ce_guided_plain_flip"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "hash_head": "guided",
}
# The default with a 128-channel R-MAC convolution (512: 590k of its 731k weights); lost
# the sixth session's cross-validation on jsrt.
PRESETS["ce_embedding_plain_flip_r128"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "rmac_channels": 128,
}
# The default with the full augmentation (mirror flips that swap side-specific mask
# classes, rotation, scale, intensity); before the eighth session --augment left flips
# out on such masks, so ce_guided_augment's JSRT figures had no flips.
PRESETS["ce_embedding_plain_augment"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "augment": True,
}
# Batch composition: the classes in equal shares in every batch.
PRESETS["ce_embedding_plain_flip_balanced"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "balanced_batches": True,
}
# Both guidances on the embedding (circle loss and cross-entropy), balanced batches so
# every circle anchor has positives.
PRESETS["circle_ce_plain_flip"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "variant": "circle_ce",
    "balanced_batches": True,
}
# Circle loss alone on the default's encoder, head and flips, revisited: a softer scale
# (gamma 16 against the paper's 32, which fits a few hundred images: docs/results.md) and
# balanced batches.
PRESETS["circle_plain_flip_g16"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "variant": "ynet",
    "circle_gamma": 16.0,
    "balanced_batches": True,
}
# Ninth session, each the default with one change: label smoothing 0.1 on the
# cross-entropy guidance (a regulariser for a few hundred images), the coupling fixed at
# 1:1 instead of learned, and the plain encoder twice as wide (32..256 filters).
PRESETS["ce_embedding_plain_flip_ls"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "label_smoothing": 0.1,
}
PRESETS["ce_embedding_plain_flip_fixed"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "coupling": "fixed",
    "coupling_weights": (1.0, 1.0),
}
PRESETS["ce_embedding_plain_flip_w2"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "stage_widths": (32, 64, 128, 256),
}
# The default with the combined hash head: half the bits from the embedding, half from
# the core-node grid (a region map for those), one hash loss.
PRESETS["ce_combined_plain_flip"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "hash_head": "combined",
}
# The default at 256 px (the datasets' own size; four times the compute): chest nodules
# a few pixels across at 128 px get twice the resolution.
PRESETS["ce_embedding_plain_flip_256"] = {
    **PRESETS["ce_embedding_plain_flip"],
    "image_size": 256,
}
# Keys of run_config.json that record the run rather than set it (written by training).
RECORD_KEYS = ("dataset",)


def _setting(default, help: str, choices=None, flag: bool = True, **kwargs):
    meta = {"help": help, "choices": choices, "flag": flag}
    if isinstance(default, list | tuple | dict):
        return dataclasses.field(default_factory=lambda: default, metadata=meta, **kwargs)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


@dataclasses.dataclass
class RunConfig:
    """Everything a training run needs besides the model's own config.

    Attributes:
        data: dataset folder (labels.csv layout); None = the built-in phantoms.
        out: run folder (model.keras, run_config.json, history.csv, metrics.json).
        epochs: passes over the training images; None = enough epochs for ``train_steps``
            optimiser steps (a small dataset gets more epochs, the same number of updates).
        train_steps: the step budget used when ``epochs`` is None.
        batch_size: images per step.
        image_size: side of the square model input, in pixels.
        bits: hash length.
        variant: ``ynet`` (circle loss on the R-MAC branch, the paper) or an ablation;
            ``no_circle`` puts softmax cross-entropy in place of circle loss,
            ``circle_ce`` trains the embedding with both.
        circle_gamma, circle_margin: scale and relaxation margin of every circle-loss
            term (the guidance of ``ynet``/``circle_ce`` and the hash head's).
        balanced_batches: every batch holds the classes in equal shares (round robin
            over per-class shuffled streams), so each anchor of the circle loss has
            positives and a rare class is seen as often as a common one.
        coupling: ``alpha``, ``uncertainty`` or ``fixed``.
        coupling_weights: (w_cls, w_seg) for ``fixed``.
        seg_guidance: ``on``, ``off`` or ``auto`` (:func:`keras_ynet.mask_signal.decide_seg_guidance`).
        hash_head: one of :data:`HASH_HEADS` (see :mod:`keras_ynet.hash_head`).
        learning_rate: AdamW peak learning rate (cosine decay to 1% of it).
        weight_decay: AdamW weight decay.
        label_smoothing: label smoothing of the ``no_circle`` cross-entropy.
        val_fraction: share of the train split held out (stratified) for checkpointing.
        seed: seeds the weights, the validation fold, shuffling and augmentation.
        augment: mirror flips (as ``flip``), small rotation/scale, brightness/contrast.
        stem_filters, stage_widths, stage_blocks: encoder widths.
        stem_stride: 4 (ResNet's stem) or 2 (no max-pool: twice the resolution).
        rmac_channels: channels of the R-MAC branch's convolution (embedding length).
        backbone: ``resnet`` or ``plain`` (keras_ynet.backbone).
        flip: random horizontal flips alone (``augment`` includes them); a mirrored mask
            swaps its left and right classes.
        distribute: ``none`` (one device), ``mirrored`` (every GPU of this host, else
            every logical CPU device) or ``multiworker`` (several hosts, from TF_CONFIG).
    """

    data: str | None = _setting(None, "dataset folder with labels.csv (default: phantoms)")
    out: str = _setting("runs/default", "run folder")
    epochs: int | None = _setting(None, "passes over the data (default: --train-steps)")
    train_steps: int = _setting(1800, "optimiser steps when --epochs is not given")
    batch_size: int = _setting(16, "images per optimiser step")
    image_size: int = _setting(128, "side of the square model input (a multiple of 32)")
    bits: int = _setting(64, "hash length", VALID_BITS)
    # The default (variant no_circle, hash head embedding, no augmentation) won the
    # 3-fold cross-validation on the train splits of both datasets (docs/results.md);
    # --preset paper trains the paper's Y-Net.
    variant: str = _setting(
        "no_circle", "classification guidance: ynet = circle loss (the paper), no_circle = "
        "cross-entropy, circle_ce = both; no_fpn / no_rmac drop a branch", VARIANTS,
    )  # fmt: skip
    # The paper's circle loss settings (gamma 32, margin 0.25); keras.losses.Circle's own
    # defaults are 80 and 0.4.
    circle_gamma: float = _setting(32.0, "circle loss scale gamma (every circle term)")
    circle_margin: float = _setting(0.25, "circle loss relaxation margin m (every circle term)")
    coupling: str = _setting("uncertainty", "how the two guidance losses are weighted", COUPLINGS)
    coupling_weights: tuple[float, float] = _setting(
        (1.0, 1.0), "(W_CLS, W_SEG) for --coupling fixed"
    )
    seg_guidance: str = _setting(
        "on", "whether the segmentation loss trains the encoder: on (the paper), off (the "
        "mask head learns on detached features), auto (off when the train split's masks "
        "alone retrieve its labels no better than chance; keras_ynet.mask_signal)",
        SEG_GUIDANCE,
    )  # fmt: skip
    hash_head: str = _setting("embedding", "how bits are read (keras_ynet.hash_head)", HASH_HEADS)
    learning_rate: float = _setting(2e-3, "AdamW peak learning rate (cosine decay)")
    weight_decay: float = _setting(1e-4, "AdamW weight decay")
    label_smoothing: float = _setting(
        0.0, "label smoothing of the cross-entropy guidance (variant no_circle)"
    )
    val_fraction: float = _setting(0.1, "share of the train split held out for checkpoints")
    seed: int = _setting(0, "seeds weights, validation fold, shuffling, augmentation")
    balanced_batches: bool = _setting(
        False, "every batch holds the classes in equal shares (round robin over classes)"
    )
    augment: bool = _setting(
        False, "mirror flips (as --flip), small rotation/scale, brightness/contrast"
    )
    # The default encoder and flips (preset ce_embedding_plain_flip) won the 3-fold
    # cross-validation of the fifth session on both datasets (docs/results.md).
    flip: bool = _setting(
        True, "random horizontal flips alone (a mirrored mask swaps left/right classes)"
    )
    # Widths 16..128 with the plain backbone: the filters of its four convolutions. The
    # ResNet settings (stem, blocks, stem stride) apply with --backbone resnet; the paper
    # preset uses the narrow ResNet (16; 8..64), ce_embedding_wide the wide one (32; 16..128).
    stem_filters: int = _setting(32, "filters of the 7x7 stem convolution (backbone resnet)")
    stage_widths: tuple[int, ...] = _setting(
        (16, 32, 64, 128), "per stage: filters (plain) or bottleneck widths (resnet)"
    )
    stage_blocks: tuple[int, ...] = _setting(
        (2, 2, 2, 2), "bottleneck blocks per stage (backbone resnet)"
    )
    backbone: str = _setting(
        "plain", "encoder: resnet (bottleneck blocks, the paper's) or plain (one 3x3 "
        "convolution and a 2x2 max-pool per stage, stage widths as filters)", BACKBONES,
    )  # fmt: skip
    stem_stride: int = _setting(
        4, "downsampling before the first stage: 4 = 7x7/2 convolution + max-pool (ResNet), "
        "2 = no max-pool (twice the resolution, about 4x the compute)", STEM_STRIDES,
    )  # fmt: skip
    # 512 is the paper's; 128 tried by cross-validation in the sixth session
    # (docs/results.md): the R-MAC convolution holds most of the plain default's weights.
    rmac_channels: int = _setting(
        512, "channels of the 3x3 convolution before R-MAC pooling (the embedding's length)"
    )
    distribute: str = _setting(
        "none", "devices to train on: none = one, mirrored = every GPU of this host, "
        "multiworker = several hosts described by TF_CONFIG (docs/distributed_training.md)",
        DISTRIBUTE_MODES,
    )  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Settings from JSON; the record keys training adds (:data:`RECORD_KEYS`) are
        skipped, any other unknown key is an error."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("expected a JSON object of run settings")
        raw = {k: v for k, v in raw.items() if k not in RECORD_KEYS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown run settings: {unknown}")
        for f in dataclasses.fields(cls):
            if f.name in raw and isinstance(raw[f.name], list):
                raw[f.name] = tuple(raw[f.name])
        return cls(**raw)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Reads a run folder's run_config.json (or any file of settings)."""
        path = Path(path)
        try:
            return cls.from_json(path.read_text())
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: cannot read run config: {e}") from None


def add_run_arguments(parser: argparse.ArgumentParser, exclude=()) -> None:
    """Adds a ``--kebab-case`` flag for every :class:`RunConfig` field not in ``exclude``.

    Every flag defaults to None ("not given"), so :func:`config_from_args` can tell a
    given value from a default; the help shows the default. ``--preset NAME`` applies
    one of :data:`PRESETS` under the flags given.
    """
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None,
        help="a named set of settings (e.g. paper: the paper's Y-Net); flags given win",
    )  # fmt: skip
    for f in dataclasses.fields(RunConfig):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {_shown(default)})"
        kwargs = {"default": None, "help": help_text, "dest": f.name}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kwargs.update(nargs=len(default) if f.name == "coupling_weights" else "+")
            kwargs["type"] = type(default[0])
        else:
            kwargs["type"] = _field_type(f.name, default)
        parser.add_argument(flag, **kwargs)


def _field_type(name: str, default):
    if default is not None:
        return type(default)
    return {"epochs": int}.get(name, str)


def _shown(value) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def config_from_args(args: argparse.Namespace, **overrides) -> RunConfig:
    """A RunConfig from parsed flags: given flags, then the ``--preset``, then
    ``overrides`` for the flags not given, then the dataclass defaults."""
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    overrides = {**overrides, **preset}
    values = {}
    for f in dataclasses.fields(RunConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = tuple(given) if isinstance(given, list) else given
        elif f.name in overrides:
            values[f.name] = overrides[f.name]
    return RunConfig(**values)


def check_run_settings(config: RunConfig) -> list[str]:
    """Problems with values argparse cannot check (ranges, shapes), one line each."""
    problems = []
    if (config.epochs is not None and config.epochs < 1) or config.batch_size < 1:
        problems.append("--epochs and --batch-size must be >= 1")
    if config.train_steps < 1:
        problems.append("--train-steps must be >= 1")
    if config.image_size < 32 or config.image_size % 32:
        problems.append(
            f"--image-size must be a positive multiple of 32 (the encoder's stride), "
            f"got {config.image_size}"
        )
    if not 0.0 < config.val_fraction < 1.0:
        problems.append(f"--val-fraction must be in (0, 1), got {config.val_fraction}")
    if not config.learning_rate > 0 or not config.weight_decay >= 0:
        problems.append("--learning-rate must be > 0 and --weight-decay >= 0")
    if not config.circle_gamma > 0 or not 0.0 <= config.circle_margin < 1.0:
        problems.append(
            f"--circle-gamma must be > 0 and --circle-margin in [0, 1) (cosine similarities), "
            f"got {config.circle_gamma} and {config.circle_margin}"
        )
    if config.rmac_channels < 1:
        problems.append(f"--rmac-channels must be >= 1, got {config.rmac_channels}")
    if len(config.stage_widths) != len(config.stage_blocks):
        problems.append("--stage-widths and --stage-blocks need the same number of values")
    return problems
