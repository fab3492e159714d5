# Two commands do everything: `make run` (the tiny world end to end) and `make test`.
# Each creates the virtual environment it needs on first use.
VENV ?= .venv
CORES ?= 2
CONFIG ?=
SMK_ARGS ?=
STAMP := $(VENV)/.installed-stamp
# The tiny world's two settings, each merged over config.yaml (the instruction setting reads the world
# the sentiment setting builds); CONFIG="a.yaml b.yaml" runs one setting instead: its files merged over
# config.yaml in order (an overlay after its base). A setting is a word, its files joined by commas;
# FILES sets the shell's "$@" to the files of $setting.
comma := ,
empty :=
SETTINGS := $(if $(strip $(CONFIG)),$(subst $(empty) $(empty),$(comma),$(strip $(CONFIG))),config.yaml config/tiny_instruction.yaml)
FILES = set -f; IFS=,; set -- $$setting; unset IFS
# Memory the jobs may hold at once (80 % of the machine's): keeps big best-of-N generate jobs apart
MEM_MB ?= $(shell awk '/^MemTotal/ {print int($$2 / 1024 * 0.8)}' /proc/meminfo 2>/dev/null || echo 16000)
SNAKEMAKE := $(VENV)/bin/snakemake --cores '$(CORES)' --resources 'mem_mb=$(MEM_MB)'

export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

DEVICE ?= cuda

.PHONY: run frontiers test test-fast test-slurm bench gpu-check planted-bugs seeds dry-run clean env

env: $(STAMP)

# uv installs the packages (50 s with their bytecode, where pip took 2 minutes). It reads no pip settings,
# so it is given the folders of wheels that pip is set up with (where torch's CPU build may lie on disk).
$(STAMP): pyproject.toml src/valueguide/vocabularies.py
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv
	UV_FIND_LINKS="$${UV_FIND_LINKS:-$${PIP_FIND_LINKS:-$$($(VENV)/bin/pip config get global.find-links 2>/dev/null)}}" \
	  $(VENV)/bin/uv pip install -q --compile-bytecode --python $(VENV)/bin/python -e '.[test]'
	$(VENV)/bin/valueguide fetch-tokenizers
	touch $(STAMP)

# After a kill: `valueguide resume` clears the dead run's lock and temporary files, and
# --rerun-incomplete redoes the jobs it cut short, instead of stopping the run. `warm-run`: the jobs
# fork from one process that imported torch, transformers and every stage once (src/valueguide/warm_server.py).
WARM := $(VENV)/bin/valueguide --log-level WARNING warm-run --
run: $(STAMP)
	@for setting in $(SETTINGS); do $(FILES); \
	  $(VENV)/bin/valueguide --log-level WARNING resume --config "$$@" && \
	  $(WARM) $(SNAKEMAKE) --rerun-incomplete --configfile "$$@" $(SMK_ARGS) || exit 1; done
	@for setting in $(SETTINGS); do $(FILES); \
	  $(VENV)/bin/valueguide --log-level WARNING show-report --config "$$@" || exit 1; done

# The frontiers (config/frontiers.yaml): VAS's beta, best-of-N up to 128, two settings each of DPO and RL, as one
# setting merged over config.yaml into results/frontiers, cached like the rest; its report adds the reward-KL and
# reward-cost plots and the claims against fine-tuning at equal KL and against best-of-128.
frontiers:
	@$(MAKE) --no-print-directory run CONFIG="config.yaml config/frontiers.yaml"

# The two settings again with other seeds (world, data, fits and sampling all change), after `make run`
# (seed 1): results/seeds/N/. Prints each setting's ranges over the seeds and how often each claim held.
SEEDS ?= 2 3
seeds: run
	@for n in $(SEEDS); do mkdir -p "results/seeds/$$n" && \
	  printf 'seed: %s\nresults_dir: results/seeds/%s\n' "$$n" "$$n" > "results/seeds/$$n/sentiment.yaml" && \
	  printf 'seed: %s\nresults_dir: results/seeds/%s/instruction\n' "$$n" "$$n" > "results/seeds/$$n/instruction.yaml" && \
	  for pair in "config.yaml sentiment" "config/tiny_instruction.yaml instruction"; do set -- $$pair; \
	    $(VENV)/bin/valueguide --log-level WARNING resume --config "$$1" "results/seeds/$$n/$$2.yaml" && \
	    $(WARM) $(SNAKEMAKE) --rerun-incomplete --configfile "$$1" "results/seeds/$$n/$$2.yaml" || exit 1; done \
	  || exit 1; done
	@$(VENV)/bin/valueguide --log-level WARNING seed-ranges --runs results $(addprefix results/seeds/,$(SEEDS))
	@$(VENV)/bin/valueguide --log-level WARNING seed-ranges --runs results/instruction \
	  $(addsuffix /instruction,$(addprefix results/seeds/,$(SEEDS)))

dry-run: $(STAMP)
	@for setting in $(SETTINGS); do $(FILES); $(SNAKEMAKE) --configfile "$$@" -n $(SMK_ARGS) || exit 1; done

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_decoding.py
	$(VENV)/bin/python bench/bench_cross_vocabulary.py
	$(VENV)/bin/python bench/bench_training.py
	$(VENV)/bin/python bench/bench_step_proxies.py

# The tests, a module per worker and one worker per core, then the GPU check's CPU variant (tiny
# shapes; its correctness part is tests/test_device.py, which pytest has just run on the CPU), so that
# the GPU script cannot rot. In CI (CI=true) the tests include the SLURM cluster test (test-slurm).
# One test alone: .venv/bin/pytest tests/FILE::NAME
PYTEST := $(VENV)/bin/pytest -n $(CORES) --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(PYTEST) $(PYTEST_ARGS)
	$(VENV)/bin/python bench/gpu_check.py --device cpu --no-correctness --out results/gpu_check_cpu

# The tests without those marked slow (a tiny world built, the Snakemake DAG run): under two minutes.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# As root on a Debian machine: a one-node SLURM cluster (scripts/local_slurm.sh) runs the tiny world
# through profiles/slurm (about four minutes alone; `make test` runs it only in CI, CI=true).
test-slurm: $(STAMP)
	VALUEGUIDE_TEST_SLURM=1 $(VENV)/bin/pytest -p no:cacheprovider tests/test_slurm.py

# On a GPU machine: correctness on CUDA, throughput at the paper's shapes, the plan's costs checked.
gpu-check: $(STAMP)
	$(VENV)/bin/python bench/gpu_check.py --device "$(DEVICE)" --out "results/gpu_check_$(DEVICE)"

# By hand: plant one bug at a time in a copy of the package; every one must make its tests fail.
planted-bugs: $(STAMP)
	$(VENV)/bin/python bench/planted_bugs.py

clean:
	rm -rf results .snakemake
