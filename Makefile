# The commands of the README. Each installs what is missing into its environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Detectron2's main branch built from source (tools/install/install_d2main.sh): from its git
# repository at the pinned commit, or from a source archive of it when D2MAIN_ARCHIVE is set.
D2MAIN_VENV ?= .venv-d2main
D2MAIN_ARCHIVE ?=

.PHONY: setup test demo setup-d2main test-d2main

setup:
	@bash tools/install/install_env.sh $(VENV)

test: setup
	@echo "[test] running the test suite"
	$(PY) -m pytest $(PYTEST_ARGS)

setup-d2main:
	@bash tools/install/install_d2main.sh "$(D2MAIN_VENV)" "$(D2MAIN_ARCHIVE)"

test-d2main: setup-d2main
	@echo "[test-d2main] running the test suite on Detectron2 main"
	$(D2MAIN_VENV)/bin/python -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) tools/shapes_demo.py $(DEMO_ARGS)
