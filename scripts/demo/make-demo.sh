#!/usr/bin/env bash
# Writes a demo dataset with the venv and photos that `make setup` prepared.
# Usage: make-demo.sh OUT N [SEED] [make_demo.py options: --bad, --layout mosi|iemocap]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$1; n=$2; seed=${3:-1}
py="$root/.venv-demo/bin/python"
[ -x "$py" ] && [ -f "$root/data/assets/lfw_subset.npy" ] ||
  { echo "make-demo: the demo generator is not set up; run \`make setup\`" >&2; exit 1; }
exec "$py" "$here/make_demo.py" --out "$out" --n "$n" --seed "$seed" \
  --assets "$root/data/assets" "${@:4}"
