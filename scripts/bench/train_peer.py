"""Uni2Mul's audio encoder (CNN-ATTN-BiLSTM) and Conformer fusion written in PyTorch, trained
the way the `train_unimodal`/`train_fusion` stages train them (Adam lr 1e-4, batch 32, seeded
shuffle, cross-entropy, a validation pass and a best-weights snapshot every epoch), on the
pipeline's own padded features, labels and split. Prints seconds per epoch as JSON.

usage: train_peer.py AUDIO_SEQ VISION_SEQ TEXT_SEQ LABELS SPLIT OBJECTS EPOCHS THREADS
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn as nn
import torch.nn.functional as F

audio_idx, vision_idx, text_idx, labels_path, split_path, objects = sys.argv[1:7]
EPOCHS, THREADS = int(sys.argv[7]), int(sys.argv[8])
torch.set_num_threads(THREADS)
torch.manual_seed(1)


def features(index):
    """clip id -> [T, D] matrix of a per-clip feature stage."""
    out = {}
    for row in pq.read_table(index).to_pylist():
        o = row["object"]
        item = pq.read_table(Path(objects) / o[:2] / f"{o}.parquet").to_pylist()[0]
        out[row["clip_id"]] = np.asarray(item["values"], dtype=np.float32).reshape(
            item["frames"], item["dim"]
        )
    return out


feats = [features(p) for p in (vision_idx, audio_idx, text_idx)]
labels = {}
for r in pq.read_table(labels_path).to_pylist():
    labels.setdefault(r["clip_id"], {})[r["target"]] = r["acc3"]
split = {r["clip_id"]: r["split"] for r in pq.read_table(split_path).to_pylist()}
ids = [c for c in split if c in labels and all(c in f for f in feats)]
X = [torch.from_numpy(np.stack([f[c] for c in ids])) for f in feats]
Y = {t: torch.tensor([labels[c][t] for c in ids]) for t in "mvat"}
train = torch.tensor([i for i, c in enumerate(ids) if split[c] == "train"])
valid = torch.tensor([i for i, c in enumerate(ids) if split[c] == "valid"])


class TanhAttention(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.w_attn = nn.Linear(t, t)

    def forward(self, q, k):
        return torch.softmax(self.w_attn(torch.tanh(q @ k.transpose(1, 2))), -1) @ k


class Encoder(nn.Module):
    """The three encoders Uni2Mul builds on, with `valid` convolutions and ReLU."""

    def __init__(self, arch, steps, dim, classes=3):
        super().__init__()
        self.arch = arch
        if arch == "cnn_lstm":
            self.convs = nn.ModuleList(
                [nn.Conv1d(dim, 64, 3), nn.Conv1d(64, 64, 1), nn.Conv1d(64, 64, 3)]
            )
            self.lstm = nn.LSTM(64, 32, batch_first=True, bidirectional=True)
            self.hidden, self.p = 64, 0.0
        elif arch == "cnn_attn_bilstm":
            self.convs = nn.ModuleList([nn.Conv1d(dim, 64, 3, stride=2)])
            self.attn = TanhAttention((steps - 3) // 2 + 1)
            self.lstm = nn.LSTM(64, 32, batch_first=True, bidirectional=True)
            self.hidden, self.p = 64, 0.5
        else:  # cnn_attn
            self.conv_q, self.conv_k = nn.Conv1d(dim, 64, 1), nn.Conv1d(dim, 64, 1)
            self.attn = TanhAttention(steps)
            self.hidden = 128
        self.head = nn.Linear(self.hidden, classes)

    def h(self, x):
        conv = lambda c, x: F.relu(c(x.transpose(1, 2))).transpose(1, 2)  # noqa: E731
        if self.arch == "cnn_attn":
            q, k = conv(self.conv_q, x), conv(self.conv_k, x)
            return torch.cat([q.mean(1), self.attn(q, k).mean(1)], 1)
        for c in self.convs:
            x = conv(c, x)
        if self.arch == "cnn_attn_bilstm":
            x = self.attn(x, x)
        _, (h, _) = self.lstm(x)
        return F.dropout(torch.cat([h[0], h[1]], 1), self.p, self.training)

    def forward(self, x):
        return self.head(self.h(x))


class FeedForward(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln, self.a, self.b = nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x, p):
        y = F.dropout(F.silu(self.a(self.ln(x))), p, self.training)
        return F.dropout(self.b(y), p, self.training)


class Mhsa(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, p):
        b, t, d = x.shape
        dh = d // self.heads
        split = lambda y: y.view(b, t, self.heads, dh).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        a = F.dropout(torch.softmax(q @ k.transpose(-2, -1) / dh**0.5, -1), p, self.training)
        return self.o((a @ v).transpose(1, 2).contiguous().view(b, t, d))


class Conformer(nn.Module):
    """X_M [B, F] as F positions lifted to d = 64, one Conformer block, GAP, FC."""

    def __init__(self, features, classes=3, d=64):
        super().__init__()
        self.lift, self.pos = nn.Linear(1, d), nn.Parameter(torch.randn(features, d) * 0.02)
        self.ff1, self.ff2 = FeedForward(d), FeedForward(d)
        self.ln1, self.mhsa = nn.LayerNorm(d), Mhsa(d, 2)
        self.conv_ln, self.conv_a = nn.LayerNorm(d), nn.Conv1d(d, 2 * d, 3, padding=1)
        self.bn, self.conv_b = nn.BatchNorm1d(d), nn.Conv1d(d, d, 1)
        self.ln_out, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, xm, p=0.5):
        x = self.lift(xm.unsqueeze(-1)) + self.pos
        x = x + self.ff1(x, p) * 0.5
        x = x + F.dropout(self.mhsa(self.ln1(x), p), p, self.training)
        c = F.glu(self.conv_a(self.conv_ln(x).transpose(1, 2)), 1)
        c = F.dropout(self.conv_b(F.silu(self.bn(c))), p, self.training)
        x = x + c.transpose(1, 2)
        x = self.ln_out(x + self.ff2(x, p) * 0.5)
        return self.head(x.mean(1))


def fit(params, forward, epochs):
    """The stages' loop; returns each epoch's wall time."""
    opt = torch.optim.Adam(params, lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    times, best = [], None
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = train[torch.randperm(len(train), generator=gen)]
        for s in range(0, len(order), 32):
            idx = order[s : s + 32]
            loss = forward(idx, True)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            vloss = forward(valid, False).item()
            if best is None or vloss < best[0]:
                best = (vloss, [p.detach().clone() for p in params])
        times.append(time.perf_counter() - t0)
    return times


out = {"threads": THREADS, "clips": len(ids), "train": len(train), "valid": len(valid)}

# Stage one: the audio model on its own (IUA) labels.
audio = Encoder("cnn_attn_bilstm", X[1].shape[1], X[1].shape[2])


def audio_step(idx, training):
    audio.train(training)
    return F.cross_entropy(audio(X[1][idx]), Y["a"][idx])


t = fit(list(audio.parameters()), audio_step, EPOCHS)
out["audio_epoch_s"] = float(np.median(t[1:]))

# Stage two: frozen pre-trained encoders, Conformer on X_M, multi-task heads 0.3/0.2/0.2/0.3.
encs = [
    Encoder("cnn_lstm", X[0].shape[1], X[0].shape[2]),
    Encoder("cnn_attn_bilstm", X[1].shape[1], X[1].shape[2]),
    Encoder("cnn_attn", X[2].shape[1], X[2].shape[2]),
]
for e in encs:
    e.eval()
    e.requires_grad_(False)
fusion = Conformer(sum(e.hidden for e in encs))
heads = nn.ModuleList([nn.Linear(e.hidden, 3) for e in encs])


def fusion_step(idx, training):
    fusion.train(training)
    hs = [e.h(x[idx]) for e, x in zip(encs, X)]
    loss = 0.3 * F.cross_entropy(fusion(torch.cat(hs, 1)), Y["m"][idx])
    for w, h, hk, t in zip((0.2, 0.2, 0.3), heads, hs, "vat"):
        loss = loss + w * F.cross_entropy(h(hk), Y[t][idx])
    return loss


t = fit(list(fusion.parameters()) + list(heads.parameters()), fusion_step, EPOCHS)
out["conformer_epoch_s"] = float(np.median(t[1:]))
print(json.dumps(out))
