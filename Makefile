# The two commands of the README. Both install what is missing into $(VENV) first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo

setup:
	@bash tools/install/install_env.sh $(VENV)

test: setup
	@echo "[test] running the test suite"
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)
