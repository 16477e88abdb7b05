# Two commands on a fresh Debian 12 machine (as root or with sudo):
#   make run    install what is missing, build (release), run `airlock serve`
#   make test   install what is missing, fmt/clippy/build, run every test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
ARGS ?=

.PHONY: help setup setup-run build run lint test test-rust test-py test-node

help:
	@echo "make run   - build and run airlock serve (ARGS='--listen 127.0.0.1:8787')"
	@echo "make test  - fmt, clippy, build, then all tests inside a throwaway keyring"

setup-run:
	scripts/setup.sh run

setup:
	scripts/setup.sh test

build: setup-run
	$(CARGO) build --workspace

run: setup-run
	$(CARGO) build --release -p airlock
	$(TARGET_DIR)/release/airlock serve $(ARGS)

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	$(CARGO) build --workspace
	@echo "== the repository must pass its own scanner"
	$(TARGET_DIR)/debug/airlock scan .
	scripts/with-keyring.sh scripts/test-all.sh

# Single suites, for iterating (after one `make test` or `make setup build`).
test-rust:
	scripts/with-keyring.sh $(CARGO) test --workspace
test-py:
	scripts/with-keyring.sh .venv/bin/python -m pytest tests/py
test-node:
	scripts/with-keyring.sh node --test tests/node
