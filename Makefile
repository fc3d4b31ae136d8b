# `make run` and `make test` do all set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
export OMP_WAIT_POLICY ?= PASSIVE

DEMO_N    ?= 600
DEMO_SEED ?= 1
DEMO_DIR  ?= data/demo
DEMO_MOSI_DIR ?= data/demo-mosi
DEMO_IEMOCAP_DIR ?= data/demo-iemocap
BIN       := target/release/pipeline

.PHONY: setup build run report-check test test-faults lint fmt bench bench-peers bench-grid bench-scale gpu-check-bundle demo-data demo-mosi demo-iemocap models clean smp cm-msf mer-sem-mbt foal-net

setup:
	@scripts/setup.sh

build: setup
	cargo build --release

# The demo dataset (CH-SIMS layout, real faces and speech; manifests/README.md has the rules).
# Rebuilt when its size, seed or generator changes; DEMO_N=2281 gives CH-SIMS's size.
DEMO_STAMP := $(DEMO_DIR)/.made-n$(DEMO_N)-s$(DEMO_SEED)
demo-data: setup $(DEMO_STAMP)

$(DEMO_STAMP): scripts/demo/make_demo.py scripts/demo/make-demo.sh
	rm -rf $(DEMO_DIR)
	scripts/demo/make-demo.sh $(DEMO_DIR) $(DEMO_N) $(DEMO_SEED)
	touch $@

# The same generator in CMU-MOSI's layout: English speech, labels in [-3, 3].
DEMO_MOSI_STAMP := $(DEMO_MOSI_DIR)/.made-n$(DEMO_N)-s$(DEMO_SEED)
demo-mosi: setup $(DEMO_MOSI_STAMP)

$(DEMO_MOSI_STAMP): scripts/demo/make_demo.py scripts/demo/make-demo.sh
	rm -rf $(DEMO_MOSI_DIR)
	scripts/demo/make-demo.sh $(DEMO_MOSI_DIR) $(DEMO_N) $(DEMO_SEED) --layout mosi
	touch $@

# IEMOCAP's layout (sessions, dialog AVIs, EmoEvaluation files) for the emotion-category studies.
DEMO_IEMOCAP_STAMP := $(DEMO_IEMOCAP_DIR)/.made-n$(DEMO_N)-s$(DEMO_SEED)
demo-iemocap: setup $(DEMO_IEMOCAP_STAMP)

$(DEMO_IEMOCAP_STAMP): scripts/demo/make_demo.py scripts/demo/make-demo.sh
	rm -rf $(DEMO_IEMOCAP_DIR)
	scripts/demo/make-demo.sh $(DEMO_IEMOCAP_DIR) $(DEMO_N) $(DEMO_SEED) --layout iemocap
	touch $@

# Pretrained models that ship inside PyPI wheels, exported once to TorchScript
# (scripts/models/export.py), and their packages' own outputs on fixed clips for the tests.
MODELS_STAMP := data/models/embed/.made
models: setup $(MODELS_STAMP)

$(MODELS_STAMP): scripts/models/export.py scripts/models/setup-torch.sh tests/data/speech16k.wav
	.venv-torch/bin/python scripts/models/export.py bundled data/models/embed
	.venv-torch/bin/python scripts/models/export.py reference data/models/reference tests/data
	.venv-torch/bin/python scripts/models/export.py tiny-hf data/models/tiny
	.venv-torch/bin/python scripts/models/export.py hf-audio --model data/models/tiny/wav2vec2-tiny --out data/models/tiny/wav2vec2.pt
	.venv-torch/bin/python scripts/models/export.py clip-image --model data/models/tiny/clip-vision-tiny --out data/models/tiny/clip.pt
	touch $@

# `make run`: pipeline/default.yaml, then every study's paper model over SEEDS (`table_main`, the
# seeds are folds for Foal-Net) on the 600-clip demo, the linear probes, and Uni2Mul's Table 2
# directions (each encoder on its own label vs the multimodal one: a paired difference over the
# seeds with a 95% t-interval and a paired bootstrap over clips and seeds). The other directions
# are one command away, for example
#   pipeline run dir_labels dir_pretrained -p pipeline/uni2mul.yaml $(UNI2MUL_SETS)
#   pipeline run dir_vision_channels dir_audio_channels dir_bimodal -p pipeline/smp.yaml $(SMP_SETS)
# and UNI2MUL_TARGETS=all runs Uni2Mul's full Table 2/3 grids. scripts/run-demo.sh runs the
# studies as a queue of jobs (a study, or one seed of its paper model), one process per core
# (DEMO_JOBS).
#
# The *_SETS override the studies' paper settings for the demo on 2 cores; each report lists
# its overrides.
# - Learning rate x10 (Uni2Mul 1e-3, SMP and CM-MSF 1e-4): the demo's 360 training clips give
#   a fraction of the paper's updates (Uni2Mul: 360 in 30 epochs against about 1,290 on
#   CH-SIMS; SMP: 600 in 100 epochs against about 2,200); at the paper's rate the models were
#   still near the baseline when training ended.
# - Compute: SMP's faces from 10 frames per clip (paper: 32) at Uni2Mul's crop, so the two
#   studies share one face stage; CM-MSF's video at 2.5 fps (paper: 15), N = 2 cascade layers
#   (paper: 8) and 20 epochs (paper: 100); MER-SEM-MBT 4 segments per clip (default 8) and 8
#   epochs (paper's early stopping at 30); Foal-Net 10 frames per clip (paper: 180), batch 8
#   (the paper's 64 gives a demo fold 7 steps an epoch), 30 epochs (paper: 60).
SEEDS ?= 1..3
UNI2MUL_TARGETS ?= table_main table_probes dir_encoder_v dir_encoder_a dir_encoder_t
UNI2MUL_SETS ?= --set vars.seeds=$(SEEDS) --set vars.lr=0.001
SMP_SETS ?= --set vars.seeds=$(SEEDS) --set vars.lr=0.0001 --set vars.frames=10 --set face.crop_size=160
CMMSF_SETS ?= --set vars.seeds=$(SEEDS) --set vars.lr=0.0001 --set vars.epochs=20 --set vars.layers=2 --set vars.video_fps=2.5
MBT_SETS ?= --set vars.seeds=$(SEEDS) --set vars.epochs=8 --set vars.segments=4
FOAL_SETS ?= --set vars.frames=10 --set vars.batch_size=8 --set vars.epochs=30
export SEEDS BIN UNI2MUL_TARGETS UNI2MUL_SETS SMP_SETS CMMSF_SETS MBT_SETS FOAL_SETS
run: build demo-data models
	scripts/run-demo.sh

# `make run`, then every study's report.html in headless Chromium (Debian's, installed on first
# use): fails on a console error, a figure that does not load or a blank page; screenshots in
# report/screenshots/. REPORTS=path/to/report.html checks other reports without running.
REPORTS ?=
report-check: $(if $(REPORTS),,run)
	scripts/check-report.sh $(REPORTS)

# One study at a time with `make run`'s overrides (TARGETS; `all` adds every ablation and
# direction). SMP and CM-MSF also run on the MOSI-layout demo.
TARGETS ?= table_main
MOSI_SETS := --set vars.data=$(DEMO_MOSI_DIR) --set vars.scale=mosi --set vars.probe_label=acc2 --set vars.probe_classes=2
smp: build demo-data demo-mosi models
	$(BIN) run $(TARGETS) -p pipeline/smp.yaml $(SMP_SETS)
	$(BIN) run $(TARGETS) -p pipeline/smp.yaml $(SMP_SETS) $(MOSI_SETS) --set vars.bimodal_metric=acc2
	$(BIN) report -p pipeline/smp.yaml $(SMP_SETS) -o report/smp
	$(BIN) report -p pipeline/smp.yaml $(SMP_SETS) $(MOSI_SETS) --set vars.bimodal_metric=acc2 -o report/smp-mosi

cm-msf: build demo-data demo-mosi models
	$(BIN) run $(TARGETS) -p pipeline/cm-msf.yaml $(CMMSF_SETS)
	$(BIN) run $(TARGETS) -p pipeline/cm-msf.yaml $(CMMSF_SETS) $(MOSI_SETS)
	$(BIN) report -p pipeline/cm-msf.yaml $(CMMSF_SETS) -o report/cm-msf
	$(BIN) report -p pipeline/cm-msf.yaml $(CMMSF_SETS) $(MOSI_SETS) -o report/cm-msf-mosi

# Papers 002 and 004 on the IEMOCAP-layout demo.
mer-sem-mbt: build demo-iemocap models
	$(BIN) run $(TARGETS) -p pipeline/mer-sem-mbt.yaml $(MBT_SETS)
	$(BIN) report -p pipeline/mer-sem-mbt.yaml $(MBT_SETS) --variants -o report/mer-sem-mbt

foal-net: build demo-iemocap models
	$(BIN) run $(TARGETS) -p pipeline/foal-net.yaml $(FOAL_SETS)
	$(BIN) report -p pipeline/foal-net.yaml $(FOAL_SETS) --variants -o report/foal-net

test: setup models
	cargo test --workspace --all-targets

# The fault suite alone, with its counts (faults injected, survived, skipped); part of `test`.
test-faults: setup
	cargo test --test faults -- --nocapture

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench: build demo-data models
	scripts/bench-noop.sh
	scripts/bench-media.sh
	scripts/bench-embed.sh
	scripts/bench-train.sh

# The Uni2Mul Table 2 + 3 grid, one seed, 120 clips, cold: wall, CPU/wall, trainings at once;
# BENCH_BEFORE=DIR (an earlier checkout, built) runs its engine first for a before/after.
bench-grid: build demo-data models
	scripts/bench-grid.sh

# What the GPU check needs on a machine with a GPU and a Python torch only (a torch-only worker
# built for GPU_TORCH_VERSION, default 2.11.0); scripts/gpu-check.sh runs it there.
gpu-check-bundle: build models
	scripts/gpu-check-bundle.sh

# This project side by side with DVC and Snakemake (installed into .venv-peers by the script)
# and with librosa, opencv-python, the ffmpeg CLI and facenet-pytorch; about 75 minutes on 2
# cores, most of it Snakemake's cold run and the 1000-clip study. Writes bench/RESULTS.md and
# bench/ratios.png; BENCH_PARTS="orch orch-big media e2e" picks parts.
bench-peers: build demo-data models
	scripts/bench-peers.sh

# The orchestration workload at 2281, 22810 and 228100 clips (cold, no-op, status, one input,
# one param, peak memory), beside DVC where it fits; about 90 minutes on 2 cores and 20 GB of disk
# in BENCH_SCALE_DIR. Writes the scale section of bench/RESULTS.md and bench/scale.png.
bench-scale: build
	scripts/bench-scale.sh

clean:
	rm -rf target cache bench/out
