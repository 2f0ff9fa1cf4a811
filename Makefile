PY ?= .venv/bin/python

.PHONY: install test test-fast lint format demo bench

install:
	./install.sh

test:  ## the whole suite, real engines (~14 min on 2 cores)
	$(PY) -m pytest -q

test-fast:  ## skip tests marked slow (real vLLM engine, training)
	$(PY) -m pytest -q -m "not slow"

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff format .

demo:
	.venv/bin/recagent demo

bench:
	$(PY) bench/baselines.py
