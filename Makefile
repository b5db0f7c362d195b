# medscreen: `make run` installs and starts the service, `make test` installs and runs the tests.
# Everything is set up from scratch on a fresh Debian machine: system packages (only when missing),
# a virtual environment at .venv, and the Python dependencies.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# Test processes: most tests wait on real peers, so three keep two cores busy. Each file runs whole in one process
# (its module fixtures start their peers once); PYTEST_WORKERS=0 runs the suite in this process.
PYTEST_WORKERS ?= 3

# Debian packages: dcmtk and orthanc are real DICOM peers for tests, chromium for page tests,
# postgresql for the PostgreSQL variant of the database tests, dicom3tools (dciodvfy) to validate what write-back builds.
TEST_DEBS := dcmtk orthanc orthanc-dicomweb chromium chromium-driver postgresql dicom3tools
RUN_DEBS :=

.PHONY: run test system-test-deps lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Serving install: no torch.
$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# Test install: serving + training (torch CPU 2.13.0, MONAI) + test tools.
$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,test]'
	touch $@ $(VENV)/.serve-installed

system-test-deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The `medscreen` command lives in .venv/bin, which is not on the shell's PATH: say so before starting.
run: $(VENV)/.serve-installed
	@echo "medscreen: the command is $(CURDIR)/$(BIN)/medscreen (or run '. $(BIN)/activate' once per shell to call it as medscreen)"
	$(BIN)/medscreen serve

test: system-test-deps $(VENV)/.test-installed
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

# Every package and the benchmarks; of models/ only its package, not the MONAI network definitions
# (models/networks.py, typed by torch's dynamic modules; pyproject tells mypy not to report inside it).
TYPED := medscreen service datasets inference worklist screening quality training benchmarks models/__init__.py

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy $(TYPED)

clean:
	rm -rf $(VENV) var .pytest_cache
