# `make run` and `make test` do all set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
export OMP_WAIT_POLICY ?= PASSIVE

DEMO_N    ?= 120
DEMO_SEED ?= 1
DEMO_DIR  ?= data/demo
BIN       := target/release/pipeline

.PHONY: setup build run test lint fmt bench demo-data clean

setup:
	@scripts/setup.sh

build: setup
	cargo build --release

demo-data: setup
	scripts/make-fixture.sh $(DEMO_DIR) $(DEMO_N) $(DEMO_SEED)

run: build demo-data
	$(BIN) run all

test: setup
	cargo test --workspace --all-targets

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench: build
	scripts/bench-noop.sh

clean:
	rm -rf target cache bench/out
