#!/usr/bin/env bash
# The cuda+cpu split check, then the edit-overhead benchmark on a CUDA GPU: bench/overhead.py in bf16 with the embedded models
# (SmolLM2-135M-Instruct and gemma-3-270m, full grid each), then reports/bench/README.md rebuilt.
# Writes reports/bench/overhead_gpu.{json,csv,md}; the GPU's name, memory and CUDA version are in
# the report. About 4-7 minutes on one H100-class GPU (18 settings x 3 workloads x 4 repeats x 2 sides per
# model); the models must be prepared already (ALIGNEZ_HOME pointing at a prepared cache) or
# preparable offline (`alignez-eval models`), since the GPU machine may have no network.
#
#   bash bench/gpu.sh                      # both embedded models
#   bash bench/gpu.sh --model /path/to/dir --grid full   # extra args go to overhead.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
OUT="${OUT:-reports/bench}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu.sh: torch sees no CUDA GPU here; nothing was run (use make bench for the CPU set)" >&2
    exit 2
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")'

# The edit on a model split across cuda and cpu (what device_map / parallelize=True builds): the
# same generations and logits as on the unsplit model (tests/test_split_devices.py, cuda cases).
"$PY" -m pytest tests/test_split_devices.py -q -p no:cacheprovider -k cuda

if [ "$#" -eq 0 ]; then
    set -- --model smollm2-135m-instruct --grid full --model gemma-3-270m --grid full
fi
# Every run is paired and interleaved, as on CPU; timings synchronise the device around each call.
timeout 570 "$PY" bench/overhead.py --device cuda --dtype bfloat16 --repeats 4 --max-gen-toks 32 \
    --prompts-b1 4 --prompts-b8 8 --tag gpu --out "$OUT" --no-progress "$@"
"$PY" bench/run_all.py --summary-only --out "$OUT"
