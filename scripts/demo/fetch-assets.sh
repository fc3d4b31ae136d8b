#!/usr/bin/env bash
# Fetches the real photos the demo dataset is made from, from the package registries only:
#   scikit-image's wheel (astronaut, camera, the LFW subset, backgrounds) and Debian's opencv-doc
#   (messi5.jpg, backgrounds). Each file is checked against its SHA-256 so the dataset stays
#   byte-identical from one machine to the next.
# Usage: fetch-assets.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
sums="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5  astronaut.png
b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a  camera.png
9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c  lfw_subset.npy
cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7  coffee.png
7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf  brick.png
1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9  messi5.jpg
23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2  home.jpg
742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07  building.jpg"
if (cd "$dir" && echo "$sums" | sha256sum --check --status 2>/dev/null); then exit 0; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=${PYTHON:-python3}
retry() { for i in 1 2 3; do "$@" && return 0; sleep $((i * 5)); done; return 1; }
retry "$py" -m pip download --quiet --no-cache-dir --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 scikit-image==0.26.0 -d "$tmp"
(cd "$tmp" && unzip -q -o scikit_image-*.whl 'skimage/data/*')
for f in astronaut.png camera.png lfw_subset.npy coffee.png brick.png; do
  cp "$tmp/skimage/data/$f" "$dir/$f"
done
# apt-get download needs package lists; a fresh machine may have none yet.
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
(cd "$tmp" && { apt-get download opencv-doc >/dev/null 2>&1 ||
  { $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq && retry apt-get download opencv-doc >/dev/null; }; })
dpkg-deb -x "$tmp"/opencv-doc_*.deb "$tmp/ocv"
for f in messi5.jpg home.jpg building.jpg; do
  cp "$tmp/ocv/usr/share/doc/opencv-doc/examples/data/$f" "$dir/$f"
done
(cd "$dir" && echo "$sums" | sha256sum --check --quiet)
