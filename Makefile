# The two set-up commands of the README:
#   make run    — install into .venv, `mailrelay init` (first time), `mailrelay serve` on SQLite
#   make test   — install, start what the tests need, run ruff, mypy, import-linter and pytest
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR ?= var

.PHONY: run test venv lint unit

$(BIN)/mailrelay: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/mailrelay

venv: $(BIN)/mailrelay

run: venv
	@[ -f $(HOME_DIR)/mailrelay.toml ] || $(BIN)/mailrelay init --home $(HOME_DIR)
	$(BIN)/mailrelay serve --home $(HOME_DIR)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: venv
	bash scripts/system-deps.sh
	$(MAKE) lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)
