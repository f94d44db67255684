# ttsbench — see README.md. Two entry points: `make demo` (rehearsal) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# resemblyzer (speaker similarity) needs torch; a CPU build is enough on the controller.
METRICS_TORCH ?= torch==2.13.0
PLAYBOOK ?= bench-chatterbox.yml
# "Host torch": the torch a GPU host already has (NGC base on the real targets). Rehearsal and test hosts
# share this one; roles/chatterbox links it into its venv (chatterbox_torch: keep) and never changes it.
HOST_TORCH ?= $(HOME)/.cache/ttsbench/host-torch
# The chatterbox venv the in-process tests run in (same recipe as the role).
CB_VENV ?= .venv-chatterbox
# Random-init Chatterbox checkpoint (~3 GB, exact from_local layout) shared by the tests.
TEST_CHECKPOINT ?= $(HOME)/.cache/ttsbench/test-checkpoint
TEST_ENV := TTSBENCH_CHATTERBOX_PYTHON=$(abspath $(CB_VENV))/bin/python \
  TTSBENCH_HOST_TORCH_PYTHON=$(HOST_TORCH)/bin/python TTSBENCH_CHATTERBOX_CHECKPOINT=$(TEST_CHECKPOINT)
INVENTORY ?= inventory/rehearsal

.PHONY: venv demo test test-fast lint roles-doc doctor hosts-up hosts-down clean host-torch chatterbox-venv test-checkpoint
# pytest-xdist for make test-fast (independent tests only); make test runs two lanes of its own
# (tests/run-suite says which tests share state).
XDIST ?= -n 2
# junit XML of every pass (tests/run-suite), read by tests/durations.py for the slowest-tests table at the end.
REPORTS ?= .test-reports
# The edit-test loop: unit, lint and contract tests (no playbook runs, no namespace hosts, no chatterbox model).
FAST_MARKS := not slow and not testhosts and not chatterbox and not browser and not timing

$(BIN)/.installed: pyproject.toml
	@echo "== controller venv $(VENV): about 1 min with pip's cache warm, 2-3 min downloading (torch, ansible)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(METRICS_TORCH)"
	$(BIN)/pip install -q -e '.[test,metrics]'
	touch $@

venv: $(BIN)/.installed

host-torch:
	@echo "== host torch $(HOST_TORCH): seconds when present, about 2 min downloading the first time"
	tests/provision/host-torch $(HOST_TORCH)

$(CB_VENV)/.installed: files/chatterbox/inference-requirements.txt pyproject.toml tests/provision/chatterbox-venv
	$(MAKE) host-torch
	tests/provision/chatterbox-venv $(CB_VENV) $(HOST_TORCH)/bin/python
	touch $@

chatterbox-venv: $(CB_VENV)/.installed

test-checkpoint: chatterbox-venv
	$(CB_VENV)/bin/ttsbench chatterbox make-random-checkpoint $(TEST_CHECKPOINT) --seed 0

doctor: venv
	$(BIN)/ttsbench doctor

demo: venv host-torch
	$(BIN)/ttsbench doctor
	@echo "== $(PLAYBOOK) on $(INVENTORY): each task line says roughly how long is left (from the last good run)"
	$(BIN)/ttsbench demo --playbook $(PLAYBOOK) -i $(INVENTORY)

test: venv chatterbox-venv test-checkpoint
	$(TEST_ENV) tests/run-suite $(BIN) $(CB_VENV) $(REPORTS)

test-fast: venv
	$(BIN)/pytest $(XDIST) -m "$(FAST_MARKS)"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production

# docs/roles.md's role reference, from roles/*/meta/argument_specs.yml (tests/test_role_specs.py checks it).
roles-doc: venv
	$(BIN)/python tools/roles_doc.py

hosts-up:
	tests/hosts/testhosts up

hosts-down:
	tests/hosts/testhosts down

clean:
	rm -rf $(VENV) $(CB_VENV) $(REPORTS) build dist *.egg-info
