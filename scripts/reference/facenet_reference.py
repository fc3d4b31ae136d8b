"""Writes tests/data/faces/facenet_reference.json: the boxes, probabilities and landmarks that
facenet-pytorch's MTCNN (the reference implementation most MER code uses) finds in the same
images as mtcnn_reference.py, for the Rust MTCNN test. Run once in a venv with torch,
torchvision and facenet-pytorch (installed --no-deps; it also needs tqdm, requests, Pillow):
    python scripts/reference/facenet_reference.py
"""
import glob, json, os
import numpy as np
import torch
from PIL import Image
from facenet_pytorch import MTCNN

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
images = sorted(glob.glob(os.path.join(ROOT, "tests/data/faces/*.png")))
images += [os.path.join(ROOT, "data/assets", n) for n in ("astronaut.png", "camera.png", "messi5.jpg")]
torch.set_num_threads(2)
mtcnn = MTCNN(keep_all=True, device="cpu")
out = {"torch": torch.__version__, "images": []}
for path in images:
    img = Image.open(path).convert("RGB")
    boxes, probs, points = mtcnn.detect(img, landmarks=True)
    faces = []
    if boxes is not None:
        for b, p, pt in zip(boxes, probs, points):
            faces.append({"box": [float(v) for v in b], "confidence": float(p),
                          "landmarks": [[float(x), float(y)] for x, y in pt]})
    out["images"].append({"path": os.path.relpath(path, ROOT), "faces": faces})
json.dump(out, open(os.path.join(ROOT, "tests/data/faces/facenet_reference.json"), "w"), indent=1)
print(json.dumps(out)[:1500])
