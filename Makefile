# mastosync — the two commands of the README:
#   make test   create .venv, install the package with its test extras, run the suite
#   make demo   run a complete migration between two local S3 servers and verify it
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: test demo lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && echo "pytest found no tests" && rc=0; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check mastosync tests bench

demo: $(STAMP)
	$(BIN)/python tests/services/demo.py

bench: $(STAMP)
	$(BIN)/python bench/compare.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo
