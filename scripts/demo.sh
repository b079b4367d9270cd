#!/usr/bin/env bash
# The main job end to end on the built-in phantoms (no downloads):
# train Y-Net -> export the encoder (ONNX + LiteRT, parity-checked) -> build the device
# index -> search it with one test image. Run through `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/demo}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

# The phantom dataset is generated once into a cache folder; print where it is.
DATA=$($PY -c "from keras_ynet.phantoms import default_phantom_dir; print(default_phantom_dir(kind='fundus'))")
QUERY=$($PY -c "
import csv, sys
rows = list(csv.DictReader(open('$DATA/labels.csv')))
print('$DATA/' + next(r['image'] for r in rows if r['split'] == 'test'))")

rm -rf "$RUN"
echo "== 1/4 train on $DATA"
$PY -m keras_ynet.train --data "$DATA" --out "$RUN" --epochs "${EPOCHS:-15}"
echo "== 2/4 export"
$PY -m export --model "$RUN/model.keras" --data "$DATA" --out "$RUN/artifacts"
echo "== 3/4 build the device index (train split)"
$PY -m deploy index build --encoder "$RUN/artifacts/encoder.onnx" --data "$DATA" --out "$RUN/index"
echo "== 4/4 search with $QUERY"
$PY -m deploy search --index "$RUN/index" --encoder "$RUN/artifacts/encoder.onnx" --image "$QUERY" -k 5
