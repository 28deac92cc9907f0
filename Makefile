# medkd developer commands. Two of them are all a newcomer needs:
#   make demo   install everything, train BCP and the supervised baseline on synthetic data, print where results are
#   make test   install everything and run the test suite
# The virtual environment is cached outside the clone, keyed by a hash of pyproject.toml, and rebuilt from
# scratch when missing or incomplete; each clone then installs itself into it in editable mode (seconds).

PYTHON    ?= python3
VENV_ROOT ?= $(HOME)/.cache/medkd/venvs
VENV      ?= $(VENV_ROOT)/$(shell sha256sum pyproject.toml | cut -c1-16)
PY        := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install system-deps demo test test-fast bench lint clean

install: $(VENV)/.ready
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
	@ln -sfn $(VENV) .venv
	@echo "medkd installed in $(VENV) (linked as .venv; 'source .venv/bin/activate' to use the medkd command)"

# No prerequisite on purpose: the folder name already hashes pyproject.toml, and a fresh clone's newer file time
# must not rebuild a cached environment.
$(VENV)/.ready:
	@echo "building the virtual environment in $(VENV) (first time only: a few minutes)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# Debian tools the tests use: dciodvfy (package dicom3tools) validates every DICOM SEG/SR medkd writes; chromium
# takes the app's screenshot, driven by selenium through chromedriver (package chromium-driver). Installed with apt
# when missing (as root, or with passwordless sudo); otherwise those
# tests skip and say why.
SYSTEM_TOOLS := dciodvfy:dicom3tools chromium:chromium chromedriver:chromium-driver
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  echo "installing Debian packages for the tests:$$missing"; \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 ) \
	  || echo "warning: could not install$$missing; the tests that need them will be skipped"; fi

demo: install
	$(VENV)/bin/medkd demo --out demo_output

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install system-deps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) bench/bcp_synthetic.py
	$(PY) bench/dicom_pipeline.py

clean:
	rm -rf demo_output .pytest_cache .venv
