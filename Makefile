# Two commands on a fresh machine: `make demo` (the main job: train the default ConvNet on the
# bundled digits) and `make test`.
# Each creates and reuses the virtual environment .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check

$(VENV)/.run: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

$(VENV)/.test: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[test]'
	touch $(VENV)/.run $@

demo: $(VENV)/.run
	$(VENV)/bin/convscope train

test: $(VENV)/.test
	$(PY) -m pytest -q

.PHONY: demo test
