# LLM Workbench — set-up and main jobs. `make report` and `make test` do all set-up.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
PROFILE ?= default

.PHONY: install report test lab clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[lab,dev]"
	@# jupyter-events asks for jsonschema[format-nongpl], whose rfc3987-syntax builds ~35 Lark parsers on import
	@# (1.9 s in every kernel, papermill and test process) to check the "iri" formats no Jupyter schema uses;
	@# without it jsonschema leaves those two formats unchecked (jsonschema issue #1428)
	$(PY) -m pip uninstall --quiet --yes rfc3987-syntax
	touch $@

install: $(VENV)/.installed

report: $(VENV)/.installed
	@out=reports/$$(date +%Y%m%d-%H%M%S); \
	echo "running the notebooks (profile $(PROFILE)) into $$out/"; \
	$(PY) -m workbench report --profile $(PROFILE) --out $$out

test: $(VENV)/.installed
	bash .ci/browser-deps
	$(PY) -m pytest -q

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks/

clean:
	rm -rf $(VENV) data/cache runs reports
