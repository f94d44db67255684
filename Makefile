# ttsbench — see README.md. Two entry points: `make demo` (rehearsal) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# resemblyzer (speaker similarity) needs torch; a CPU build is enough on the controller.
METRICS_TORCH ?= torch==2.13.0
PLAYBOOK ?= rehearsal-smoke.yml
INVENTORY ?= inventory/rehearsal

.PHONY: venv demo test lint doctor hosts-up hosts-down clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(METRICS_TORCH)"
	$(BIN)/pip install -q -e '.[test,metrics]'
	touch $@

venv: $(BIN)/.installed

doctor: venv
	$(BIN)/ttsbench doctor

demo: venv
	$(BIN)/ttsbench doctor
	$(BIN)/ttsbench demo --playbook $(PLAYBOOK) -i $(INVENTORY)

test: venv
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
