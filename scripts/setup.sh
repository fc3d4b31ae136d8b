#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian 12 machine, and nothing when it is
# already there. Safe to run again.
set -euo pipefail

# munge + slurm*: the single-node Slurm cluster that tests `pipeline submit`
# (scripts/slurm/local-cluster.sh); nothing starts them on install.
debs=(ffmpeg libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
      libavfilter-dev libavdevice-dev clang libclang-dev pkg-config
      espeak-ng python3-venv unzip libopencv-dev fonts-dejavu-core
      munge slurmctld slurmd slurm-client)
missing=()
for d in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  # Another apt process (unattended upgrades, a parallel set-up) may hold the lock for a while.
  for i in 1 2 3 4 5 6; do
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -q && break
    echo "setup: apt-get update failed, retrying ($i)"; sleep $((i * 5))
  done
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${missing[@]}"
  # The downloaded .deb files are several hundred MB that nothing reads again.
  $sudo apt-get clean
fi

# The demo dataset generator: numpy + Pillow in a venv (pinned: the same versions give the same
# bytes), and the real photos it is made from.
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/venv.sh"
venv="$root/.venv-demo"
pinned_venv "$venv" "numpy==2.4.6 pillow==13.0.0" "the demo generator"
PYTHON="$venv/bin/python" "$root/scripts/demo/fetch-assets.sh" "$root/data/assets"

# What the tests read exports with, as a user's notebook would: numpy, pandas, pyarrow.
pinned_venv "$root/.venv-read" "numpy==2.4.6 pandas==3.1.1 pyarrow==26.0.1" "reading exports"

# libtorch for the tch-based stages, and Python torch for the one-time TorchScript export of the
# pretrained models (scripts/models/). PyPI's torch wheel is the only torch that can be had
# offline; `import torch` needs its whole CUDA wheel set even on CPU, so the full set is
# installed once and the Rust build links against the same files (.cargo/config.toml).
"$root/scripts/models/setup-torch.sh" "$root/.venv-torch"
# MMSA's own data loader, for the test that loads an exported feature pickle with it. Without
# its dependencies: the loader needs only numpy and torch, which the venv has.
if ! "$root/.venv-torch/bin/python" -c "import importlib.util as u; assert u.find_spec('MMSA')" 2>/dev/null; then
  for i in 1 2 3; do "$root/.venv-torch/bin/pip" install -q --no-cache-dir --no-deps MMSA==2.2.1 && break; sleep $((i * 5)); done
fi
PYTHON="$venv/bin/python" "$root/scripts/models/fetch-mtcnn.sh" "$root/data/models/mtcnn"

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "setup: a Rust toolchain (cargo, rustc >= 1.89) is needed: https://rustup.rs" >&2; exit 1; }
echo "setup: ok ($(cargo --version), $(ffmpeg -version | head -1 | cut -d' ' -f1-3))"
