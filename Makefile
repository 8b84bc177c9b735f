# Each target creates .venv when it is missing.
# On a machine without a GPU the CPU build of torch goes in first; on a GPU box run
# `make install TORCH_SPEC=torch` (or install your CUDA build of torch into .venv first).
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lamina fit --config configs/tiny.yaml
	@echo "Run folder written under runs/tiny/. Watch it with: $(VENV)/bin/tensorboard --logdir runs"

test: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/throughput.py --out bench/results

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
