# Each target creates .venv when it is missing.
# On a machine without a GPU the CPU build of torch goes in first; on a GPU box run
# `make install TORCH_SPEC=torch` (or install your CUDA build of torch into .venv first).
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test bench compare-demo clean

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

# RLP against its controls from the demo's checkpoint, three seeds each, then the report.
# CPU: 15 real runs, about 14 minutes on one core of the development machine (2026-11-25).
COMPARE_ARMS  ?= rlp-tiny ntp-tiny ntp-tiny-flops rlp-tiny-filler rlp-tiny-frozen
COMPARE_SEEDS ?= 1 2 3
compare-demo: $(STAMP)
	test -f runs/tiny/version_0/checkpoints/last.ckpt || $(MAKE) demo
	for seed in $(COMPARE_SEEDS); do for arm in $(COMPARE_ARMS); do \
	  $(VENV)/bin/lamina fit --config configs/$$arm.yaml --seed_everything $$seed --data.seed $$seed \
	    --trainer.logger.init_args.save_dir runs/compare-demo --trainer.enable_progress_bar false || exit 1; \
	done; done
	$(VENV)/bin/lamina compare $(addprefix runs/compare-demo/,$(COMPARE_ARMS)) --out compare/demo
	@echo "Report: compare/demo/report.md"

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
