# Two commands from a clean clone: `make mini` (the mini-study) and `make test`.
# Each creates the virtual environment .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= runs

.PHONY: mini test sysdeps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

mini: $(STAMP)
	$(BIN)/study run configs/mini.toml --out $(OUT)
	$(BIN)/analysis rank $(OUT)/mini --out $(OUT)/mini/ranking.csv
	$(BIN)/analysis report $(OUT)/mini --out $(OUT)/mini/report.html

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
