# ttsbench — see README.md. Two entry points: `make demo` (rehearsal) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# resemblyzer (speaker similarity) needs torch; a CPU build is enough on the controller.
METRICS_TORCH ?= torch==2.13.0
PLAYBOOK ?= bench-chatterbox.yml
INVENTORY ?= inventory/rehearsal

# The rehearsal's "host torch" (roles/chatterbox keeps the host's torch; here a venv models it).
HOST_TORCH ?= $(HOME)/.cache/ttsbench/host-torch
HOST_TORCH_SPEC ?= torch==2.9.1 torchaudio==2.9.1

.PHONY: host-torch venv demo test lint doctor hosts-up hosts-down clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(METRICS_TORCH)"
	$(BIN)/pip install -q -e '.[test,metrics]'
	touch $@

venv: $(BIN)/.installed

$(HOST_TORCH)/bin/python:
	$(PYTHON) -m venv $(HOST_TORCH)
	$(HOST_TORCH)/bin/pip install -q $(HOST_TORCH_SPEC)

host-torch: $(HOST_TORCH)/bin/python

doctor: venv
	$(BIN)/ttsbench doctor

demo: venv host-torch
	$(BIN)/ttsbench doctor
	$(BIN)/ttsbench demo --playbook $(PLAYBOOK) -i $(INVENTORY)

test: venv host-torch
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check python tests
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production

hosts-up:
	tests/hosts/testhosts up

hosts-down:
	tests/hosts/testhosts down

clean:
	rm -rf $(VENV) build dist *.egg-info
