"""The main branch: a narrow ResNet with bottleneck blocks (expansion 4), or a plain CNN.

Stage outputs C2..C5 sit at strides 4/8/16/32 (``stem_stride`` 4, ResNet's stem: a 7x7
stride-2 convolution and a 3x3 stride-2 max-pool) or 2/4/8/16 (``stem_stride`` 2: the
max-pool dropped, so every stage sees twice the resolution, at about four times the
cost). Their channels are 4x the stage widths. C5 is Y-Net's "core node".
"""

from __future__ import annotations

from keras import layers

from keras_ynet.run_config import BACKBONES, STEM_STRIDES

EXPANSION = 4


def _conv_bn(x, filters, kernel, strides, name, relu=True):
    x = layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def bottleneck_block(x, width: int, strides: int, name: str):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, plus a projected shortcut when needed."""
    out_channels = width * EXPANSION
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = _conv_bn(x, out_channels, 1, strides, f"{name}_proj", relu=False)
    y = _conv_bn(x, width, 1, 1, f"{name}_a")
    y = _conv_bn(y, width, 3, strides, f"{name}_b")
    y = _conv_bn(y, out_channels, 1, 1, f"{name}_c", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet_backbone(x, stem_filters: int, stage_widths, stage_blocks, stem_stride: int = 4):
    """Builds the encoder on tensor ``x`` (already rescaled).

    ``stem_stride`` 2 keeps twice the resolution into the first stage: lesions a few
    pixels across at 128 px (chest nodules) are otherwise pooled away before the first
    3x3 convolution.

    Returns:
        list of the stage outputs [C2, C3, C4, C5].
    """
    if len(stage_widths) != len(stage_blocks):
        raise ValueError("stage_widths and stage_blocks must have the same length")
    if stem_stride not in STEM_STRIDES:
        raise ValueError(f"stem_stride must be one of {STEM_STRIDES}, got {stem_stride!r}")
    x = _conv_bn(x, stem_filters, 7, 2, "stem")
    if stem_stride == 4:
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    features = []
    for stage, (width, blocks) in enumerate(zip(stage_widths, stage_blocks, strict=True)):
        for block in range(blocks):
            strides = 2 if (stage > 0 and block == 0) else 1
            x = bottleneck_block(x, width, strides, name=f"c{stage + 2}_block{block + 1}")
        features.append(x)
    return features


def plain_backbone(x, stage_widths):
    """A plain CNN: per stage one 3x3 convolution (``stage_widths`` filters), batch norm,
    ReLU and a 2x2 max-pool, so C2..C5 sit at strides 2/4/8/16 with ``stage_widths``
    channels. With widths 16/32/64/128 it is the 97k-parameter convolutional part of the
    plain classifier a user would train (``keras_ynet.baselines.plain_cnn``): full
    resolution into the first convolution, two orders of magnitude fewer weights.
    """
    features = []
    for stage, width in enumerate(stage_widths):
        name = f"c{stage + 2}_plain"
        x = _conv_bn(x, width, 3, 1, name)
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        features.append(x)
    return features


def encoder_features(x, backbone: str, stem_filters, stage_widths, stage_blocks, stem_stride):
    """[C2, C3, C4, C5] of the chosen ``backbone`` (one of ``BACKBONES``) on tensor ``x``;
    the plain backbone has no stem and one convolution per stage (the stem and block
    settings apply to ``resnet`` only)."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    if backbone == "plain":
        return plain_backbone(x, stage_widths)
    return resnet_backbone(x, stem_filters, stage_widths, stage_blocks, stem_stride)


__all__ = ["encoder_features", "plain_backbone", "resnet_backbone", "bottleneck_block"]
