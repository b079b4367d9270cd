"""Baselines of the paper's Table II on Y-Net's encoder, data pipeline and evaluation.

Two families, one module per method or shared piece:

* aggregation of the last conv map of a classification-trained encoder
  (:mod:`.classification`): ``mac``, ``spoc`` (reference rows), ``rmac``, ``crow``,
  ``cam`` (:mod:`.aggregation`) and ``regional_attention``
  (:mod:`.regional_attention`); float descriptors ranked by cosine;
* deep hashing (:mod:`.hashing`): ``dpsh``, ``dsh``, ``drh``, ``ddmh``, each loss in its
  own module; sign codes ranked by Hamming distance.

:func:`keras_ynet.baselines.runner.run_baseline` trains and evaluates any of them.
"""

AGGREGATION_METHODS = ("mac", "spoc", "rmac", "crow", "cam", "regional_attention")
HASHING_METHODS = ("dpsh", "dsh", "drh", "ddmh")
BASELINES = AGGREGATION_METHODS + HASHING_METHODS
