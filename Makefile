# The commands of the README: `make demo`, `make test`, `make bench` and `make docs`. Each sets up .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench docs test-upstream clean

# docs/requirements.txt too: `make test` builds the manual (tests/docs/). PYTHONWARNINGS hides
# setuptools' notice about editable installs, which no user can act on.
$(STAMP): pyproject.toml docs/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[dev]' -r docs/requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.shop.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test: lint typecheck unit

# Needs Redis and RabbitMQ; BENCH_ARGS=--quick runs scenarios 1-7 with less work (under a minute),
# --slow adds the slow scenarios (9, and 14 and 15 at their largest), --only 1,2 picks scenarios.
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The manual, from docs/ and the docstrings, into site/; --strict makes any warning an error.
# NO_MKDOCS_2_WARNING silences Material's banner about its own end of life, which is no build problem.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The contract and broker tests against the newest dramatiq, pika and redis-py, past the pins, in
# a scratch venv: whether an upgrade keeps what dramatiq_eventbus/brokers/*/upstream.py relies on.
UPSTREAM := .venv-upstream
UPSTREAM_TESTS := tests/brokers tests/integration tests/faults/test_guarded_consumers.py \
	tests/ordering/test_lanes_in_broker.py tests/ordering/test_plain_broker.py
test-upstream:
	rm -rf $(UPSTREAM)
	$(PYTHON) -m venv $(UPSTREAM)
	$(UPSTREAM)/bin/python -m pip install --quiet --upgrade pip
	$(UPSTREAM)/bin/python -m pip install --quiet -e '.[dev]'
	$(UPSTREAM)/bin/python -m pip install --quiet --upgrade --no-deps dramatiq pika redis
	$(UPSTREAM)/bin/python -m pip list 2>/dev/null | grep -iE '^(dramatiq|pika|redis) '
	$(UPSTREAM)/bin/pytest -m "not slow" $(UPSTREAM_TESTS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(UPSTREAM) .mypy_cache .pytest_cache .ruff_cache site
