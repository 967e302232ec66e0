#!/usr/bin/env bash
# One short GPU check (for a lent CUDA machine): training with --device auto (standard and
# balanced HPCM-tiny, with the closing real-bitstream evaluation on the GPU), then HPCM's speed
# bench on CUDA. Expects the missing wheels (compressai, pytorch-msssim, bjontegaard) in .whl/.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
run() { local name=$1; shift; echo "== $name"; timeout 170 python3 -m lictrain train --device auto --epochs 2 --epoch-size 64 \
        --wandb-mode disabled --save_path /tmp/gc/$name "$@" 2>&1 | grep -v Warning | tail -14;
        cp /tmp/gc/$name/metrics.jsonl "$OUT/$name.metrics.jsonl" 2>/dev/null; }
run standard --no-final-eval
run balanced-hpcm-tiny --model hpcm-tiny --use_balanced --balanced-update next-batch --adaptive_gamma --gamma_strategy hpcm
echo "== hpcm_speed (cuda)"
timeout 200 python3 bench/hpcm_speed.py --device cuda 2>&1 | grep -v Warning | tail -30
