# Kaliko's front door. On a fresh machine (Debian/Ubuntu, Python 3.11):
#   make demo    the Stars demo: a live lab on nftables as root on Linux, else the in-memory data plane
#                (SERVE=1: keep the live lab and its management UI up afterwards)
#   make test    lint, types, layering, then every test tier (starts the real services first)
# `make venv` is implied by both; it reinstalls only when pyproject.toml changes.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.installed
PACKAGES := policycore wire iokit controller node_agent lab loadtest kalikoctl
LINT_PATHS := $(PACKAGES) tests

.DEFAULT_GOAL := help
.PHONY: help venv lint test demo bench

help:
	@echo "make demo      Stars demo: live lab on nftables as root on Linux, else the offline evaluator"
	@echo "               SERVE=1 keeps the live lab and its UI (http://127.0.0.1:30002/) up until Ctrl-C"
	@echo "make test      ruff, mypy, import-linter, then pytest over tests/ (needs 'make services')"
	@echo "make lint      ruff check, ruff format --check, mypy, lint-imports"
	@echo "make venv      create $(VENV) and install -e .[dev] (only when pyproject.toml changed)"
	@echo "make services  start etcd, Mosquitto and Kafka for the fv tier (services-down, services-status)"
	@echo "make bench     the load harness's fixed suite on the real services (~15 min; reports in .run/bench/)"

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

lint: $(VENV_STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/lint-imports

test: lint services
	$(BIN)/pytest tests

bench: services
	$(BIN)/python -m loadtest.suite --out .run/bench

demo: $(VENV_STAMP)
	@if [ "$$(id -u)" = 0 ] && [ "$$(uname -s)" = Linux ]; then dp=nftables; \
	  echo "make demo: Stars on a live lab (nftables in network namespaces; root on Linux)"; \
	  serve="$(if $(SERVE),--serve)"; \
	else dp=memory; serve=; echo "make demo: Stars on the in-memory data plane (the live lab needs root on Linux)"; \
	  if [ -n "$(SERVE)" ]; then echo "make demo: SERVE ignored: only the live lab has a UI to keep up"; fi; fi; \
	$(BIN)/kalikoctl demo stars --dataplane $$dp $$serve

# The services block below runs the venv's Python.
services: $(VENV_STAMP)

# ---- services (owner: services helper) --------------------------------------------------------
# Real etcd (127.0.0.1:2379), Mosquitto (127.0.0.1:1883) and Kafka (127.0.0.1:9092) for fv tests;
# data and logs in .run/services/, Kafka jars in .cache/kafka-libs/. See deploy/services/services.sh.
.PHONY: services services-down services-status

services:
	KALIKO_PYTHON=$(CURDIR)/.venv/bin/python bash deploy/services/services.sh up

services-down:
	bash deploy/services/services.sh down

services-status:
	bash deploy/services/services.sh status
# ---- end services -------------------------------------------------------------------------------
