# Two commands on a fresh machine: `make demo` (the main job: train the default ConvNet on the
# bundled digits) and `make test`.
# Each creates and reuses the virtual environment .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check

# The main job installs the viz extra (matplotlib) so that its run folder gets report.html and
# curves.png; predict and the explorer never import matplotlib, so their start-up does not change.
$(VENV)/.run: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[viz]'
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
