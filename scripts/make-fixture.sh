#!/usr/bin/env bash
# Writes a small dataset in the MMSA (CH-SIMS) layout made of real H.264 + AAC clips:
#   DIR/label.csv, DIR/Raw/<video_id>/<clip_id>.mp4
# Usage: make-fixture.sh DIR N [SEED] [UNIQUE]
#   UNIQUE (default N): how many distinct clips to encode; the rest are byte copies, so large
#   manifests for engine benchmarks are quick to make.
# The clips are test patterns with a tone: they exercise the engine and FFmpeg, not emotion.
set -euo pipefail
dir=$1; n=$2; seed=${3:-1}; unique=${4:-$n}
command -v ffmpeg >/dev/null || { echo "ffmpeg is not installed (make setup installs it)" >&2; exit 1; }
mkdir -p "$dir/Raw"
words=(good bad fine great awful calm happy sad okay lovely)
modes=(train train train train train train train valid test test)
rng=$seed
# Sets R to a value in [0, $1); no subshell, so the generator state advances.
next() { rng=$(( (rng * 1103515245 + 12345) % 2147483648 )); R=$(( (rng / 65536) % $1 )); }
{
  echo "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"
  for ((i = 0; i < n; i++)); do
    vid=$(printf 'video_%04d' $((i / 10))); cid=$(printf '%04d' $((i % 10 + 1)))
    mkdir -p "$dir/Raw/$vid"
    out="$dir/Raw/$vid/$cid.mp4"
    if (( i < unique )); then
      if [ ! -s "$out" ]; then
        next 600; freq=$((200 + R)); next 2; dur=$((1 + R))
        ffmpeg -nostdin -loglevel error -y -threads 1 \
          -f lavfi -i "testsrc=size=96x64:rate=25:duration=$dur" \
          -f lavfi -i "sine=frequency=$freq:sample_rate=16000:duration=$dur" \
          -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -b:a 32k \
          -fflags +bitexact -flags:v +bitexact -flags:a +bitexact -map_metadata -1 "$out"
      fi
    else
      src=$(printf '%s/Raw/video_%04d/%04d.mp4' "$dir" $(((i % unique) / 10)) $(((i % unique) % 10 + 1)))
      cp "$src" "$out"
    fi
    next 21; t=$R; next 21; a=$R; next 21; v=$R; next 10; w1=${words[$R]}; next 10; w2=${words[$R]}
    lt=$(awk -v x=$t 'BEGIN{printf "%.1f", x/10-1}')
    la=$(awk -v x=$a 'BEGIN{printf "%.1f", x/10-1}')
    lv=$(awk -v x=$v 'BEGIN{printf "%.1f", x/10-1}')
    lm=$(awk -v a=$lt -v b=$la -v c=$lv 'BEGIN{m=(a+b+c)/3; printf "%.1f", m}')
    ann=$(awk -v m=$lm 'BEGIN{print (m < -0.1) ? "Negative" : (m > 0.1 ? "Positive" : "Neutral")}')
    echo "$vid,$cid,$w1 $w2 clip $i,$lm,$lt,$la,$lv,$ann,${modes[$((i % 10))]}"
  done
} > "$dir/label.csv"
