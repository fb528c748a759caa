#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (about 8 minutes on an H100/H200):
#   bash bench/gpu_checks.sh [OUTDIR]
# Needs torch with CUDA, transformers, tokenizers, safetensors, tensorboard and click; the package
# itself is used from this checkout (PYTHONPATH), not installed. Every step has its own time limit
# and the script goes on after a failure, so one broken step still leaves the others' numbers.
# The logs land in OUTDIR (default: ./gpu-checks), one file per step.

set -u
OUT_DIR="${1:-gpu-checks}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HOME="$(mktemp -d)" HF_HUB_OFFLINE=1 # the gpt2 preset's tokenizer comes from a local stand-in
WORK="$(mktemp -d)"
PY="${PYTHON:-python3}"

step() { # step NAME SECONDS COMMAND...
    local name="$1" limit="$2"
    shift 2
    echo "=== $name (limit ${limit}s) ==="
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s ==="
}

step device 20 bash -c "nvidia-smi -L; $PY -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), transformers.__version__)'"
step standin 60 $PY bench/gpt2_tokenizer_standin.py "$HF_HOME"
# The headline: the 124M preset through the real trainer, bf16 autocast, torch.compile, SDPA (flash).
step mfu_compile 190 $PY bench/bench_train.py presets --presets gpt2 --batch 32 --preset-steps 60 --compile --workdir "$WORK/compile"
step mfu_eager 80 $PY bench/bench_train.py presets --presets tiny,small,gpt2 --batch 32 --preset-steps 40 --workdir "$WORK/eager"
# Ours vs transformers' GPT2LMHeadModel on the GPU: training step (fp32 and bf16) and batch-1 generation.
step model_vs_hf 110 $PY bench/bench_model.py --device cuda --shapes small,gpt2 --batch 8 --seq-len 512 --iters 10 --new-tokens 64
# Batch-1 generation at 124M: ours (auto = bf16 on the GPU) against transformers' generate(), and
# the fraction of the GPU's read bandwidth each reaches (issue 17, item 4).
step generate 150 $PY bench/bench_generate.py --device cuda --rounds 3
# The CLI end to end on CUDA: fp16 with loss scaling, then generate and evaluate from the checkpoint.
step cli_fp16 90 bash -c "$PY -m gpt2tui train --preset small --device cuda --precision fp16 --max-steps 150 --eval-interval 50 \
  --run-name gpu-fp16 --runs-dir $WORK/runs --checkpoints-dir $WORK/ck && \
  $PY -m gpt2tui generate --checkpoint $WORK/ck/gpu-fp16 --device cuda --prompt 'The' --max-new-tokens 40 --seed 1 && \
  $PY -m gpt2tui evaluate --checkpoint $WORK/ck/gpu-fp16 --device cuda"
echo "logs in $OUT_DIR"
