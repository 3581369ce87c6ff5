# KF Studio — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install demo screenshots wheel clean mutate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned exactly: on these machines that pin takes the local CPU build,
	# anything looser pulls gigabytes of CUDA wheels.
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## Open the studio on the built-in digits demo (runs the demo headless when there is no display).
run: $(STAMP)
	$(PY) -m kfstudio run-demo

## Install everything and run the whole test suite (offscreen Qt, CPU only).
test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

## The headless digits demo end to end.
demo: $(STAMP)
	$(PY) -m kfstudio factorize --teacher builtin:digits --data builtin:digits --out runs/digits

## Mutation testing (slow, so not part of `make test`; see docs/testing.md): mutmut plants one change at
## a time in the modules listed under [tool.mutmut] in pyproject.toml and runs only the tests that run
## the changed function. Narrow it with MUTANTS, e.g. make mutate MUTANTS='kfstudio.io.schema*'
DEV_STAMP := $(VENV)/.dev-installed
$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,dev]"
	touch $(DEV_STAMP)

mutate: $(DEV_STAMP)
	env -u PYTHONPATH OMP_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen $(VENV)/bin/mutmut run $(MUTANTS)
	$(VENV)/bin/mutmut results

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) docs/make_screenshots.py

clean:
	rm -rf $(VENV) runs .pytest_cache mutants

## A wheel with the demo teachers inside (see packaging/README.md).
wheel: $(STAMP)
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .
