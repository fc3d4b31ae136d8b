"""Writes tests/data/librosa_reference.json: librosa's log-mel and MFCC of tests/data/speech16k.wav
(espeak-ng speech, 16 kHz) for the Rust spectral tests. Run once, with librosa 0.11 installed:
    python scripts/reference/librosa_reference.py
"""
import json, os, numpy as np, librosa, soundfile as sf
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
y, sr = sf.read(ROOT + "/tests/data/speech16k.wav", dtype="int16")
y = y.astype(np.float32) / 32768.0
out = {"librosa": librosa.__version__, "sr": sr, "samples": len(y), "cases": []}
cases = [
  dict(name="logmel_16k_constant", kind="logmel", n_fft=400, hop_length=160, win_length=400, n_mels=64, fmin=0.0, fmax=8000.0, pad_mode="constant"),
  dict(name="logmel_16k_reflect_win320", kind="logmel", n_fft=512, hop_length=160, win_length=320, n_mels=40, fmin=50.0, fmax=7600.0, pad_mode="reflect"),
  dict(name="mfcc_librosa_defaults", kind="mfcc", n_fft=2048, hop_length=512, win_length=2048, n_mels=128, fmin=0.0, fmax=None, pad_mode="constant", n_mfcc=20),
  dict(name="mfcc_13_htk", kind="mfcc", n_fft=400, hop_length=160, win_length=400, n_mels=40, fmin=0.0, fmax=8000.0, pad_mode="constant", n_mfcc=13, htk=True),
]
for c in cases:
    S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=c["n_fft"], hop_length=c["hop_length"], win_length=c["win_length"],
        n_mels=c["n_mels"], fmin=c["fmin"], fmax=c["fmax"], center=True, pad_mode=c["pad_mode"], power=2.0, htk=c.get("htk", False))
    D = librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=80.0)
    F = librosa.feature.mfcc(S=D, n_mfcc=c["n_mfcc"], dct_type=2, norm="ortho") if c["kind"] == "mfcc" else D
    F = F.T  # frames x dim
    n = F.shape[0]
    pick = sorted(set([0, 1, 2, n // 3, n // 2, (2 * n) // 3, n - 2, n - 1]))
    c2 = dict(c); c2["frames"] = n; c2["dim"] = F.shape[1]
    c2["rows"] = {str(i): [float("%.6g" % v) for v in F[i]] for i in pick}
    out["cases"].append(c2)
json.dump(out, open(ROOT + "/tests/data/librosa_reference.json", "w"), indent=0)
print(librosa.__version__, len(y), [ (c["name"], c["frames"]) for c in out["cases"]])
