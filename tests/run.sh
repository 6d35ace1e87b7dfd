#!/usr/bin/env bash
# Runs the whole test suite twice: under Keras 3 and under tf_keras
# (TF_USE_LEGACY_KERAS=1, where the TensorFlow Recommenders tests run).
# Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
echo "=== Keras 3 ==="
python -m pytest -p no:cacheprovider "$@" || status=1
echo "=== tf_keras (TF_USE_LEGACY_KERAS=1) ==="
TF_USE_LEGACY_KERAS=1 python -m pytest -p no:cacheprovider "$@" || status=1
exit "$status"
