# Two entry points do all set-up on a fresh machine:
#   make demo   - install into .venv and run `streamprov demo` on embedded stores
#   make test   - install, add the system services the tests need, lint, type-check, test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,postgres,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/streamprov demo

system-deps:
	bash scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) streamprov-data
