# Two commands do everything on a fresh machine:
#   make demo   set up a runtime venv (no torch) and run the engine on the shipped default model
#   make test   set up the full venv (runtime + training + test tools) and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test setup setup-dev bench clean

$(VENV)/.runtime: pyproject.toml setup.py $(wildcard improv/native/*.c improv/native/*.h)
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(PIP) -e '.[train,dev]'
	touch $@

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

demo: $(VENV)/.runtime
	$(VENV)/bin/improv demo

test: $(VENV)/.dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(VENV)/bin/improv bench --json bench.json

clean:
	rm -rf $(VENV) .cache build *.egg-info
