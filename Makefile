# Two commands do all set-up on a fresh machine:
#   make demo   -> builds .venv (Python >= 3.12) and runs the live demo
#   make test   -> builds .venv and runs ruff and every test
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
EXTRAS    := autofit,demo,notebook,numpyro,blackjax,optax,viewer,dev
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast lint bench soak clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@PY312="$$(scripts/find-python312)" || exit 1; \
	  echo "using $$PY312"; \
	  [ -x $(PY) ] || "$$PY312" -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]" -c constraints.txt
	@touch $(STAMP)

demo: venv
	MPLBACKEND=Agg $(PY) -m autofit_jaxviz demo $(DEMO_ARGS)

lint: venv
	$(PY) -m ruff check autofit_jaxviz tests benchmarks examples scripts

test: venv lint
	MPLBACKEND=Agg $(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	MPLBACKEND=Agg $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: venv
	MPLBACKEND=Agg $(PY) benchmarks/run.py

# not part of `make test`: the autofit, reliability and concurrency suites 10 times
soak: venv
	MPLBACKEND=Agg $(PY) scripts/soak.py --runs 10

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
