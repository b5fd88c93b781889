# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing and install the
# pinned dependencies once (a stamp file re-runs the install only when requirements change).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.emflow-installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Compute jobs never reach the hub: assets come from the fetch rules (or the demo's local builder).
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= disabled

.PHONY: setup demo test dag lint clean-demo

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snakemake --profile profiles/demo
	@# Snakemake's own report (figures, tables, captions, with report.html as its Summary page).
	@# (Snakemake 9.27 prints harmless "coroutine never awaited" RuntimeWarnings while reporting: silenced.)
	PYTHONWARNINGS=ignore::RuntimeWarning $(VENV)/bin/snakemake --profile profiles/demo --report results/demo/snakemake_report.html
	@# The demo checks its own story (judge calibration, the no-persona EM climb) and fails when it is absent.
	@echo
	$(VENV)/bin/emflow demo-story config.yaml config/demo.yaml
	@echo
	@echo "Demo finished: a synthetic world with a planted effect (see README, \"The demo's world\")."
	@echo "  report:  $(CURDIR)/results/demo/report.html"
	@echo "           $(CURDIR)/results/demo/snakemake_report.html (Snakemake's report of the same run)"
	@echo "  figures: $(CURDIR)/results/demo/figures/"
	@echo "  tables:  $(CURDIR)/results/demo/tables/"

test: $(STAMP)
	$(PY) -m pytest

# The experiment graph before spending anything: the job list and the rule graph (config.yaml by default).
dag: $(STAMP)
	$(VENV)/bin/snakemake -n --quiet rules
	@mkdir -p results
	$(VENV)/bin/snakemake --rulegraph > results/rulegraph.dot
	@if command -v dot >/dev/null; then dot -Tsvg results/rulegraph.dot > results/rulegraph.svg && \
		echo "rule graph: results/rulegraph.svg"; else echo "rule graph: results/rulegraph.dot (install graphviz for SVG)"; fi

# Style and workflow checks (CI runs them): formatting, lint rules (pyproject.toml [tool.ruff]) and Snakemake's
# own linter on the default config and on the demo's.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakemake --lint --profile profiles/demo

clean-demo:
	rm -rf results/demo resources/demo
