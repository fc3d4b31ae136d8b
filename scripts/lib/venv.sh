# Sourced by the set-up scripts. `pinned_venv DIR "pkg==v ..." WHAT` makes (or keeps) a Python
# venv holding exactly those pinned packages: DIR/.ok records the list, so a changed pin
# rebuilds it and an unchanged one costs nothing. pip is retried (a flaky mirror).
pinned_venv() {
  local dir=$1 want=$2 what=$3
  if [ -f "$dir/.ok" ] && [ "$(cat "$dir/.ok")" = "$want" ]; then
    return 0
  fi
  echo "setup: python venv for $what ($want)"
  rm -rf "$dir"
  python3 -m venv "$dir"
  local i
  for i in 1 2 3; do
    # shellcheck disable=SC2086 # the list is words on purpose
    "$dir/bin/pip" install -q --no-cache-dir $want && break
    [ "$i" = 3 ] && return 1
    sleep $((i * 5))
  done
  echo "$want" > "$dir/.ok"
}

# The benchmarks' peers (DVC, Snakemake) and matplotlib, pinned so figures stay comparable.
PEERS_PINS="dvc==3.67.1 snakemake==9.27.1 matplotlib==3.10.7"
