#!/usr/bin/env bash
# The main job on real images: export scikit-learn's handwritten digits as PNG class folders,
# split them 70/15/15, train a small CNN, evaluate it on the test split, predict one image.
set -euo pipefail
cd "$(dirname "$0")/.."
IMGCLF=.venv/bin/imgclf
MIN_ACCURACY=0.97

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "imgclf datasets export digits data/digits"
rm -rf data/digits data/digits-split
$IMGCLF datasets export digits data/digits

step "imgclf split data/digits --out data/digits-split"
$IMGCLF split data/digits --out data/digits-split --seed 42

step "imgclf train --config configs/digits.yaml"
RUN=$($IMGCLF train --config configs/digits.yaml | tail -n 1)

step "imgclf evaluate $RUN"
$IMGCLF evaluate "$RUN"
ACCURACY=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy'])" "$RUN/evaluation/test_metrics.json")

IMAGE=$(head -n 2 data/digits-split/test.csv | tail -n 1 | cut -d, -f1)
step "imgclf predict $RUN $IMAGE"
$IMGCLF predict "$RUN" "$IMAGE"

printf '\ntest accuracy %s (expected at least %s); run directory %s\n' "$ACCURACY" "$MIN_ACCURACY" "$RUN" >&2
.venv/bin/python -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" "$ACCURACY" "$MIN_ACCURACY" \
  || { echo "test accuracy $ACCURACY is below $MIN_ACCURACY" >&2; exit 1; }
