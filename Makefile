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

.PHONY: setup build run test lint fmt bench bench-peers demo-data demo-mosi demo-iemocap models clean smp cm-msf mer-sem-mbt foal-net

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

# The default pipeline (media and features), then the Uni2Mul study on the 600-clip demo: the
# paper's model over SEEDS (table_main), a linear probe per modality, and a subset of the paper's
# directions (IUA vs IMA for the model and for Table 2's encoders, pre-trained vs not), each a
# paired difference over the seeds with a 95% t-interval. dir_multitask and dir_fusion are one
# command away (`pipeline run dir_fusion -p pipeline/uni2mul.yaml $(UNI2MUL_SETS)`), and
# UNI2MUL_TARGETS=all runs the full Table 2/3 grids.
# UNI2MUL_SETS override the study's paper defaults for the demo, and the report lists them:
# - lr 1e-3 (paper: 1e-4): the demo's 360 training clips give 12 updates an epoch, 360 in the
#   paper's 30 epochs, against about 1,290 on CH-SIMS's 1,368; at 1e-4 the encoders were still
#   improving at epoch 30.
# - threads 2: trainings run one at a time, so each may use both cores.
SEEDS ?= 1..3
UNI2MUL_TARGETS ?= table_main table_probes dir_labels dir_pretrained \
                   dir_encoder_v dir_encoder_a dir_encoder_t
UNI2MUL_SETS ?= --set vars.seeds=$(SEEDS) --set vars.lr=0.001 --set vars.threads=2
run: build demo-data models
	$(BIN) run all
	$(BIN) run $(UNI2MUL_TARGETS) -p pipeline/uni2mul.yaml $(UNI2MUL_SETS)
	$(BIN) report -p pipeline/uni2mul.yaml $(UNI2MUL_SETS) -o report/uni2mul
	$(BIN) metrics table_main table_probes dir_labels dir_pretrained -p pipeline/uni2mul.yaml $(UNI2MUL_SETS)

# Papers 001 and 003: the main table of each (TARGETS; `all` adds every ablation) on the
# CH-SIMS-layout and the MOSI-layout demo, then a report. SMP trains in about a minute per seed
# on 2 cores; CM-MSF (N = 8 cascade layers, 13.4M parameters) in about 12 minutes per seed.
TARGETS ?= table_main
smp: build demo-data demo-mosi models
	$(BIN) run $(TARGETS) -p pipeline/smp.yaml --set vars.seeds=$(SEEDS)
	$(BIN) run $(TARGETS) -p pipeline/smp.yaml --set vars.seeds=$(SEEDS) --set vars.data=$(DEMO_MOSI_DIR) --set vars.scale=mosi --set vars.bimodal_metric=acc2
	$(BIN) report -p pipeline/smp.yaml --set vars.seeds=$(SEEDS) -o report/smp
	$(BIN) report -p pipeline/smp.yaml --set vars.seeds=$(SEEDS) --set vars.data=$(DEMO_MOSI_DIR) --set vars.scale=mosi --set vars.bimodal_metric=acc2 -o report/smp-mosi

cm-msf: build demo-data demo-mosi models
	$(BIN) run $(TARGETS) -p pipeline/cm-msf.yaml --set vars.seeds=$(SEEDS)
	$(BIN) run $(TARGETS) -p pipeline/cm-msf.yaml --set vars.seeds=$(SEEDS) --set vars.data=$(DEMO_MOSI_DIR) --set vars.scale=mosi
	$(BIN) report -p pipeline/cm-msf.yaml --set vars.seeds=$(SEEDS) -o report/cm-msf
	$(BIN) report -p pipeline/cm-msf.yaml --set vars.seeds=$(SEEDS) --set vars.data=$(DEMO_MOSI_DIR) --set vars.scale=mosi -o report/cm-msf-mosi

# Papers 002 and 004 on the IEMOCAP-layout demo. MER-SEM-MBT trains its CNNs end to end (about
# 4 s per epoch on 2 cores, so a few minutes per model); Foal-Net about a minute per fold.
MBT_SEEDS ?= 1..3
mer-sem-mbt: build demo-iemocap models
	$(BIN) run $(TARGETS) -p pipeline/mer-sem-mbt.yaml --set vars.seeds=$(MBT_SEEDS)
	$(BIN) report -p pipeline/mer-sem-mbt.yaml --set vars.seeds=$(MBT_SEEDS) --variants -o report/mer-sem-mbt

# The paper's batch of 64 is the whole training set of a 120-clip demo fold (one step per
# epoch, too few to learn); FOAL_BATCH=64 runs it anyway, a larger DEMO_N makes it fit.
FOAL_BATCH ?= 8
FOAL_EPOCHS ?= 30
foal-net: build demo-iemocap models
	$(BIN) run $(TARGETS) -p pipeline/foal-net.yaml --set vars.batch_size=$(FOAL_BATCH) --set vars.epochs=$(FOAL_EPOCHS)
	$(BIN) report -p pipeline/foal-net.yaml --set vars.batch_size=$(FOAL_BATCH) --set vars.epochs=$(FOAL_EPOCHS) --variants -o report/foal-net

test: setup models
	cargo test --workspace --all-targets

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

# This project side by side with DVC and Snakemake (installed into .venv-peers by the script)
# and with librosa, opencv-python, the ffmpeg CLI and facenet-pytorch; about 75 minutes on 2
# cores, most of it Snakemake's cold run and the 1000-clip study. Writes bench/RESULTS.md and
# bench/ratios.png; BENCH_PARTS="orch orch-big media e2e" picks parts.
bench-peers: build demo-data models
	scripts/bench-peers.sh

clean:
	rm -rf target cache bench/out
