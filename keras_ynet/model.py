"""Y-Net: one Keras functional model with three named outputs.

``embedding`` (R-MAC branch, classification guidance), ``mask`` (FPN branch,
segmentation guidance) and ``hash`` (hash head on the core node). Training uses a
custom ``train_step`` with the coupled loss of :mod:`keras_ynet.losses`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from keras_ynet import losses
from keras_ynet.backbone import encoder_features
from keras_ynet.fingerprint import RESCALE_LAYER
from keras_ynet.hash_head import GUIDED_HEADS, HASH_HEADS, TRAINED_HEADS, build_hash_head
from keras_ynet.layers import PACKAGE, RMACPooling, StopGradient, l2_normalize
from keras_ynet.run_config import VALID_BITS, VARIANTS

OUTPUTS = ("embedding", "mask", "hash")


@keras.saving.register_keras_serializable(package=PACKAGE)
class YNet(keras.Model):
    """Y-Net (Fang et al., IEEE JBHI 2021) for hash-code medical image retrieval.

    The input is an image of float pixel values in [0, 255] (NHWC); rescaling is inside
    the graph, so exports can take uint8 directly.

    The constructor's defaults are the paper's Y-Net (circle loss, the trained grid
    head). Training builds the model from :class:`keras_ynet.run_config.RunConfig`, whose
    defaults (cross-entropy, the ``embedding`` head) were chosen by cross-validation: that
    is the one declaration of what a run uses.

    Args:
        input_shape: (height, width, channels); 1 channel for grey, 3 for RGB.
        num_classes: number of image-level classes (for circle loss / ``no_circle``).
        num_mask_classes: number of per-pixel mask classes (background included).
        bits: hash length, one of 32, 64, 128, 256.
        variant: ``ynet`` (circle loss, the paper's) or an ablation: ``no_fpn`` (no
            segmentation loss), ``no_rmac`` (no classification loss), ``no_circle``
            (softmax cross-entropy on the R-MAC embedding instead of circle loss),
            ``circle_ce`` (both on the embedding, summed).
        hash_head: one of :data:`keras_ynet.run_config.HASH_HEADS`: ``trained`` (the
            paper's grid, trained), our ``embedding`` or ``guided`` head, or the paper's
            untrained ``mean`` / ``conv`` (see :mod:`keras_ynet.hash_head`).
        coupling: ``alpha``, ``uncertainty`` or ``fixed`` (see ``LossCoupling``).
        coupling_weights: (w_cls, w_seg) for ``fixed`` coupling.
        seg_trains_encoder: True (the paper): the segmentation loss trains the encoder
            through the FPN branch. False: the FPN reads the encoder's features through a
            gradient stop, so the mask head still learns to segment and the encoder learns
            from the classification guidance alone (``--seg-guidance off``).
        stem_filters: filters of the 7x7 stem convolution.
        stage_widths: bottleneck widths per stage (outputs have 4x these channels).
        stage_blocks: bottleneck blocks per stage.
        stem_stride: 4 (ResNet's stem) or 2 (no max-pool; see :mod:`keras_ynet.backbone`).
        backbone: ``resnet`` or ``plain`` (:func:`keras_ynet.backbone.encoder_features`).
        fpn_channels: channels of the FPN lateral and top-down path.
        rmac_channels: channels of the 3x3 convolution before R-MAC pooling.
        rmac_levels: R-MAC scales L.
        hash_loss_weight: weight of the hash terms of the ``trained`` and ``embedding`` heads.
        label_smoothing: label smoothing of the cross-entropy guidance (0: none).
        circle_gamma, circle_margin: scale and margin of every circle-loss term.
        class_names: names of the image classes, index order (saved with the model).
        mask_class_names: names of the mask classes, value order.
        seed: seed of the initialisers that are never trained (``conv`` hash head).

    Example:
        >>> model = YNet(input_shape=(64, 64, 1), num_classes=2, num_mask_classes=3)
        >>> out = model.predict(images)  # {"embedding": ..., "mask": ..., "hash": ...}
    """

    def __init__(
        self,
        input_shape=(256, 256, 1),
        num_classes=2,
        num_mask_classes=3,
        bits=64,
        variant="ynet",
        hash_head="trained",
        coupling="uncertainty",
        coupling_weights=(1.0, 1.0),
        seg_trains_encoder=True,
        stem_filters=16,
        stage_widths=(8, 16, 32, 64),
        stage_blocks=(2, 2, 2, 2),
        stem_stride=4,
        backbone="resnet",
        fpn_channels=32,
        rmac_channels=512,
        rmac_levels=3,
        hash_loss_weight=1.0,
        label_smoothing=0.0,
        circle_gamma=losses.CIRCLE_GAMMA,
        circle_margin=losses.CIRCLE_MARGIN,
        class_names=None,
        mask_class_names=None,
        seed=0,
        **kwargs,
    ):
        if bits not in VALID_BITS:
            raise ValueError(f"bits must be one of {VALID_BITS}, got {bits}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if hash_head not in HASH_HEADS:
            raise ValueError(f"hash_head must be one of {HASH_HEADS}, got {hash_head!r}")
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
            raise ValueError(f"input_shape must be (H, W, 1 or 3), got {input_shape}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")

        # === Functional graph ===
        image = keras.Input(shape=input_shape, name="image")
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=RESCALE_LAYER)(image)
        c2, c3, c4, c5 = encoder_features(
            x, backbone, stem_filters, stage_widths, stage_blocks, stem_stride
        )

        # R-MAC branch: 3x3 conv + ReLU on the core node, then R-MAC pooling.
        r = layers.Conv2D(rmac_channels, 3, padding="same", activation="relu", name="rmac_conv")(c5)
        embedding = RMACPooling(levels=rmac_levels, name="embedding")(r)

        # FPN branch: laterals on C5..C2, top-down upsample-and-add, to input size.
        fpn_inputs = {5: c5, 4: c4, 3: c3, 2: c2}
        if not seg_trains_encoder:
            fpn_inputs = {
                level: StopGradient(name=f"fpn_detach{level}")(feature)
                for level, feature in fpn_inputs.items()
            }
        p = layers.Conv2D(fpn_channels, 1, name="fpn_lateral5")(fpn_inputs[5])
        for level in (4, 3, 2):
            feature = fpn_inputs[level]
            lateral = layers.Conv2D(fpn_channels, 1, name=f"fpn_lateral{level}")(feature)
            up = layers.UpSampling2D(
                size=(lateral.shape[1] // p.shape[1], lateral.shape[2] // p.shape[2]),
                interpolation="bilinear",
                name=f"fpn_up{level + 1}",
            )(p)
            p = layers.Add(name=f"fpn_merge{level}")([lateral, up])
        p = layers.UpSampling2D(
            size=(input_shape[0] // p.shape[1], input_shape[1] // p.shape[2]),
            interpolation="bilinear",
            name="fpn_up_full",
        )(p)
        mask = layers.Conv2D(num_mask_classes, 3, padding="same", name="mask")(p)

        hash_values = build_hash_head(c5, bits, hash_head, seed, embedding=embedding)

        super().__init__(
            inputs=image,
            outputs={"embedding": embedding, "mask": mask, "hash": hash_values},
            **kwargs,
        )

        # === Config (constructor arguments, returned verbatim by get_config) ===
        self.input_shape_ = input_shape
        self.num_classes = num_classes
        self.num_mask_classes = num_mask_classes
        self.bits = bits
        self.variant = variant
        self.hash_head = hash_head
        self.coupling = coupling
        self.coupling_weights = tuple(float(w) for w in coupling_weights)
        self.seg_trains_encoder = bool(seg_trains_encoder)
        self.stem_filters = stem_filters
        self.stage_widths = tuple(stage_widths)
        self.stage_blocks = tuple(stage_blocks)
        self.stem_stride = int(stem_stride)
        self.backbone = backbone
        self.fpn_channels = fpn_channels
        self.rmac_channels = rmac_channels
        self.rmac_levels = rmac_levels
        self.hash_loss_weight = hash_loss_weight
        self.label_smoothing = float(label_smoothing)
        self.circle_gamma = float(circle_gamma)
        self.circle_margin = float(circle_margin)
        self.class_names = list(class_names) if class_names is not None else None
        self.mask_class_names = list(mask_class_names) if mask_class_names is not None else None
        self.seed = seed

        # === Training-only parts (not in the exported graph) ===
        self.loss_coupling = losses.LossCoupling(coupling, self.coupling_weights, name="coupling")
        if variant in ("no_circle", "circle_ce"):
            self.classifier = layers.Dense(num_classes, name="classifier")
            self.classifier.build((None, bits if hash_head in GUIDED_HEADS else rmac_channels))
        term_names = []
        if variant != "no_rmac":
            term_names.append("cls_loss")
        if variant != "no_fpn":
            term_names.append("seg_loss")
        if hash_head in TRAINED_HEADS:
            term_names.append("hash_loss")
        self.tracker_names = ["loss", *term_names, "w_cls", "w_seg"]
        self.loss_trackers = [keras.metrics.Mean(name=n) for n in self.tracker_names]

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": self.input_shape_,
            "num_classes": self.num_classes,
            "num_mask_classes": self.num_mask_classes,
            "bits": self.bits,
            "variant": self.variant,
            "hash_head": self.hash_head,
            "coupling": self.coupling,
            "coupling_weights": self.coupling_weights,
            "seg_trains_encoder": self.seg_trains_encoder,
            "stem_filters": self.stem_filters,
            "stage_widths": self.stage_widths,
            "stage_blocks": self.stage_blocks,
            "stem_stride": self.stem_stride,
            "backbone": self.backbone,
            "fpn_channels": self.fpn_channels,
            "rmac_channels": self.rmac_channels,
            "rmac_levels": self.rmac_levels,
            "hash_loss_weight": self.hash_loss_weight,
            "label_smoothing": self.label_smoothing,
            "circle_gamma": self.circle_gamma,
            "circle_margin": self.circle_margin,
            "class_names": self.class_names,
            "mask_class_names": self.mask_class_names,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------------ losses
    def loss_terms(self, y, outputs):
        """The unweighted loss terms active for this variant, as a dict of scalars."""
        labels, masks = y["label"], y["mask"]
        terms = {}
        guided = self.hash_head in GUIDED_HEADS
        # A guided head puts the classification guidance on the hash values themselves.
        guide = outputs["hash"] if guided else outputs["embedding"]
        circle = dict(gamma=self.circle_gamma, margin=self.circle_margin)
        if self.variant in ("ynet", "no_fpn", "circle_ce"):
            terms["cls"] = losses.circle_loss(labels, l2_normalize(guide), **circle)
        if self.variant in ("no_circle", "circle_ce"):
            ce = losses.classification_loss(labels, self.classifier(guide), self.label_smoothing)
            terms["cls"] = terms["cls"] + ce if "cls" in terms else ce
        if self.variant != "no_fpn":
            terms["seg"] = losses.segmentation_loss(masks, outputs["mask"])
        if self.hash_head in TRAINED_HEADS:
            h = outputs["hash"]
            if guided:  # the guidance already trains the bits: only push them to +-1
                terms["hash"] = losses.quantization_loss(h)
            else:
                terms["hash"] = losses.circle_loss(
                    labels, l2_normalize(h), **circle
                ) + losses.quantization_loss(h)
        return terms

    def total_loss(self, terms):
        total = self.loss_coupling(terms.get("cls"), terms.get("seg"))
        if "hash" in terms:
            total = total + self.hash_loss_weight * terms["hash"]
        return total

    # ------------------------------------------------------------------ steps
    @property
    def metrics(self):
        return list(self.loss_trackers)

    def _update(self, total, terms):
        w_cls, w_seg = self.loss_coupling.weights_for_terms()
        values = {"loss": total, "w_cls": w_cls, "w_seg": w_seg}
        values.update({f"{name}_loss": value for name, value in terms.items()})
        for tracker in self.loss_trackers:
            tracker.update_state(values[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.loss_trackers}

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            terms = self.loss_terms(y, outputs)
            total = self.total_loss(terms)
            # Under tf.distribute the optimiser sums the replicas' gradients, and each
            # replica's loss is a mean over its share of the batch: dividing by the
            # replica count makes the step the gradient of the mean over the global batch
            # (as keras.losses does for compiled losses). 1 replica: unchanged.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = total / tf.cast(replicas, total.dtype) if replicas > 1 else total
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        # Ablations leave some branches without a loss: skip their empty gradients.
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._update(total, terms)

    def test_step(self, data):
        x, y = data[0], data[1]
        outputs = self(x, training=False)
        terms = self.loss_terms(y, outputs)
        return self._update(self.total_loss(terms), terms)
