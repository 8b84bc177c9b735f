# Each target creates .venv when it is missing.
# On a machine without a GPU the CPU build of torch goes in first; on a GPU box run
# `make install TORCH_SPEC=torch LOCK=` (a CUDA build of torch brings the triton it was built with).
# Everything else is installed at the versions in constraints.txt, the ones the suite last passed
# with; `make lock` refreshes that file to the newest versions pyproject.toml's ranges allow, after
# running the suite on them in a venv of its own.
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
LOCK       ?= constraints.txt
PYTEST_ARGS ?=

.PHONY: install lock demo test bench compare-demo clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q $(if $(LOCK),-c $(LOCK)) -e ".[test]"
	touch $(STAMP)

# torch is pinned by TORCH_SPEC, not here: the CPU and CUDA builds differ.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(MAKE) test VENV=$(LOCK_VENV) LOCK=
	{ echo "# What make install installs beside torch (TORCH_SPEC): the newest versions pyproject.toml's"; \
	  echo "# ranges allowed when make lock last ran the suite on them ($$(date -u +%Y-%m-%d), python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())'))."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)=='; \
	} > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

demo: $(STAMP)
	$(VENV)/bin/lamina fit --config configs/tiny.yaml
	@echo "Run folder written under runs/tiny/. Watch it with: $(VENV)/bin/tensorboard --logdir runs"
	@echo "and open (the cards to read first pinned at the top, smoothing 0): $$($(PY) -m lamina.tensorboard)"

# Two workers (pytest-xdist), a file's tests on one worker, one thread each: the suite is mostly
# single-threaded fits and spawns, so two cores run two files at once.
TEST_WORKERS ?= 2
test: $(STAMP)
	TRITON_INTERPRET=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/throughput.py --out bench/results

# RLP against its controls from the demo's checkpoint, three seeds each, then the report.
# CPU: 15 real runs, about 14 minutes on one core of the development machine (2026-11-25).
# report.md opens with the headline: val/bpb of each control − rlp-tiny, paired by seed, at matched tokens and
# at matched FLOPs, read by lamina's verdict rule. The question: does RLP lower val/bpb against its controls?
# - reference rlp-tiny (the first arm), --predict higher: one direction for every contrast, each control
#   predicted above RLP (next-token at the same tokens and at the same FLOPs, filler thoughts, thoughts from
#   the frozen start model). With a control as the reference the other controls' contrasts would predict
#   nothing RLP claims.
# - --primary val/bpb: the measure RLP claims to improve in pretraining; the rest are in the tables.
# - --margin 0.005 bpb, fixed here before the runs: half of what next-token training itself lowers val/bpb by
#   over the demo's 60 steps from this checkpoint (about 0.01: 1.100 -> 1.090 and 1.059 -> 1.049 at seeds 1
#   and 2, runs of 2026-12-07; 1.070 -> 1.060 over seeds in bench/results/compare-demo-cpu-2026-11-25). A
#   difference under half a run's own progress is not one to act on. Not from the seeds' spread.
COMPARE_ARMS  ?= rlp-tiny ntp-tiny ntp-tiny-flops rlp-tiny-filler rlp-tiny-frozen
COMPARE_SEEDS ?= 1 2 3
compare-demo: $(STAMP)
	test -f runs/tiny/version_0/checkpoints/last.ckpt || $(MAKE) demo
	for seed in $(COMPARE_SEEDS); do for arm in $(COMPARE_ARMS); do \
	  $(VENV)/bin/lamina fit --config configs/$$arm.yaml --seed_everything $$seed --data.seed $$seed \
	    --trainer.logger.init_args.save_dir runs/compare-demo --trainer.enable_progress_bar false || exit 1; \
	done; done
	$(VENV)/bin/lamina compare $(addprefix runs/compare-demo/,$(COMPARE_ARMS)) \
	  --primary val/bpb --predict higher --margin 0.005 --out compare/demo
	@echo "Report: compare/demo/report.md"

clean:
	rm -rf $(VENV) .venv-lock .cache runs .pytest_cache

# The GPU check (bench/gpu_check.sh). `make wheels` downloads, where pip has the network, the wheels a
# lent GPU box lacks into .wheels/ (carried there with the run); `make gpu-check-cpu` runs the same
# steps on this CPU at tiny shapes (GPU_CHECK_OUT: where its JSON goes, default a fresh temp folder).
.PHONY: wheels gpu-check gpu-check-cpu
wheels:
	bash bench/fetch_wheels.sh

gpu-check:
	bash bench/gpu_check.sh

gpu-check-cpu: $(STAMP)
	bash bench/gpu_check.sh --cpu --out $${GPU_CHECK_OUT:-$$(mktemp -d)}

# finetune-fragility (lamina.study.claims.finetune_fragility): direct fine-tuning vs proxy tuning on
# fact retention (forced choice), the new task, a proxy strength sweep and the base's lower or upper
# blocks restored into the fine-tuned model, paired by seed; writes study/finetune-fragility/report.md
# and study/index.md. Finished runs under study/runs/ are reused, a killed run resumes. FINETUNE_SEEDS:
# one number N means seeds 1..N, several numbers mean exactly those seeds. It runs although its pilot
# (configs/study/pilots.yaml) says 3 seeds cannot tell its margin: `make study` leaves it out below about 10.
FINETUNE_SEEDS ?= 1 2 3
.PHONY: finetune-study
finetune-study: $(STAMP)
	$(PY) -m lamina.study finetune-fragility --seeds $(FINETUNE_SEEDS) --out study --preset cpu --run-underpowered
	@echo "Report: study/finetune-fragility/report.md"

# reasoning-in-pretraining (lamina.study.claims.reasoning_in_pretraining): phase 1 pretrains the tiny GPT on
# world arithmetic with its worked thoughts (a gate stops the study unless greedy thinking at level 2 lands in 15-85%);
# phase 2, from that checkpoint on the same arithmetic with the thoughts stripped: RLP (thought slots,
# line reward) against RLP with shuffled rewards, next-token at the same tokens, next-token at the same
# FLOPs, and the paper's RLP. Writes study/reasoning-in-pretraining/report.md (a verdict per contrast, paired by
# seed), study/reasoning-in-pretraining/compare/ (lamina compare: accuracy vs tokens and FLOPs, elicitation share)
# and study/index.md. About 12 CPU-minutes a seed; finished runs under study/runs/ are
# reused, a killed run resumes. RLP_SEEDS: one number N means seeds 1..N, several exactly those seeds.
# It runs although its pilot (configs/study/pilots.yaml) says 3 seeds cannot tell its margin: `make
# study` leaves it and elicitation out below about 13 seeds.
RLP_SEEDS ?= 1 2 3
.PHONY: rlp-study
rlp-study: $(STAMP)
	$(PY) -m lamina.study reasoning-in-pretraining --seeds $(RLP_SEEDS) --out study --preset cpu --run-underpowered
	@echo "Report: study/reasoning-in-pretraining/report.md"

# Every claim lamina studies (lamina study, docs/studies.md): density-familiarity, sparsify-difficulty,
# hierarchy, modularity, reasoning-in-pretraining, elicitation, finetune-fragility, context-vs-prior,
# STUDY_SEEDS seeds each at the cpu preset; study/index.md gathers the verdicts. Runs already under
# study/runs/ are reused (the targets above share them), a killed run resumes where it stopped.
# A group of claims whose pilots (configs/study/pilots.yaml) say the seeds cannot tell their margins is
# not run, and reports "not tested" with the seeds it would need: at 5 seeds, reasoning-in-pretraining,
# elicitation and finetune-fragility (lamina study --run-underpowered runs them). 5 seeds: what the
# context-vs-prior primary's seed-to-seed spread asks for (3 seeds: -0.30, -0.71, -0.72; interval to +0.02).
# STUDY_JOBS: seeds fitted at once (a seed of a group of claims a process, one thread each; the longest
# first): one more than the cores, so that with 5 seeds of alike length no core idles through a last round.
STUDY_SEEDS ?= 5
STUDY_JOBS  ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))
.PHONY: study
study: $(STAMP)
	$(PY) -m lamina.study --seeds $(STUDY_SEEDS) --out study --preset cpu --jobs $(STUDY_JOBS)
	@echo "Findings: study/index.md"
