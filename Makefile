# Two commands from a clean clone: `make mini` (the mini-study) and `make test`.
# Each creates the virtual environment .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= runs

.PHONY: mini test sysdeps bench claims clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

mini: $(STAMP)
	$(BIN)/study run configs/mini.toml --out $(OUT)
	$(BIN)/analysis rank $(OUT)/mini --out $(OUT)/mini/ranking.csv
	$(BIN)/analysis report $(OUT)/mini --out $(OUT)/mini/report.html

# The claim studies of configs/claims/ (CLAIMS.md), each consolidated into
# results/claims/<study>.parquet with its report, and the verdict table
# results/claims/claims.{csv,md,html}. Resumes like any study: a rerun trains nothing.
CLAIMS := $(wildcard configs/claims/*.toml)
claims: $(STAMP) sysdeps
	mkdir -p results/claims
	for f in $(CLAIMS); do \
	  n=claims_$$(basename $$f .toml); \
	  $(BIN)/study run $$f --out $(OUT)/claims || exit 1; \
	  $(BIN)/study consolidate $$f --out $(OUT)/claims || exit 1; \
	  cp $(OUT)/claims/$$n/runs.parquet results/claims/$$n.parquet || exit 1; \
	  $(BIN)/analysis report results/claims/$$n.parquet --out results/claims/$$n.html || exit 1; \
	done
	$(BIN)/analysis claims results/claims/claims_*.parquet --out results/claims/claims.csv \
	  --out results/claims/claims.md --out results/claims/claims.html \
	  --reproduction results/claims/dziugaite_roy.md

# System packages the tests use (Chromium for the report, Fashion-MNIST, sshd);
# installed when this runs as root with apt, skipped (tests then skip) otherwise.
sysdeps:
	@bash .ci/sysdeps

test: $(STAMP) sysdeps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
