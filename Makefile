# mastosync — the two commands of the README:
#   make test   create .venv, install the package with its test extras, run the suite
#   make demo   run a complete migration between two local S3 servers and verify it
PYTHON ?= python3
# Three workers on two cores: the tests mostly wait on servers and CLI processes. Each worker
# starts its own servers, on ports of its own (tests/services/process.py).
PYTEST_ARGS ?= -n 3 --dist load
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
S3RVER  = $(VENV)/s3rver/node_modules/.bin/s3rver

.PHONY: test check demo demo-disk lint bench venv clean prerequisites

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# sshd and npm when missing (as root), else their suites are skipped with the reason.
prerequisites:
	@bash tests/services/prerequisites.sh

# s3rver (npm): a third S3 implementation the storage suites run against.
$(S3RVER): | $(STAMP) prerequisites
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --prefix $(VENV)/s3rver --no-audit --no-fund --silent s3rver@3.7.1; \
	else echo "make test: npm not found: the s3rver suites are skipped"; fi

test: $(STAMP) prerequisites $(S3RVER) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The edit-run loop: lint and the suites that need no server but PostgreSQL and moto (about a minute).
CHECK_TESTS = tests/test_layout.py tests/test_sigv4.py tests/test_units.py tests/test_config.py tests/test_init.py \
	tests/test_deploy.py tests/test_cutover.py tests/test_limits.py tests/test_records.py tests/test_code_shape.py
check: $(STAMP) lint
	$(BIN)/python -m pytest -n 3 $(CHECK_TESTS)

# ruff (the line length included) and mypy in strict mode, the tests and benchmarks too: part of make test.
lint: $(STAMP)
	$(BIN)/ruff check mastosync tests bench
	$(BIN)/python -m mypy mastosync
	$(BIN)/python -m mypy --explicit-package-bases tests bench

demo: $(STAMP)
	$(BIN)/python tests/services/demo.py

# The same migration from Mastodon's local storage (a public/system folder) into a bucket.
demo-disk: $(STAMP)
	$(BIN)/python tests/services/demo.py --disk

bench: $(STAMP)
	$(BIN)/python bench/compare.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo
