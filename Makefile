# Two commands do everything: `make run` (the tiny world end to end) and `make test`.
# Each creates the virtual environment it needs on first use.
VENV ?= .venv
CORES ?= 2
CONFIG ?=
SMK_ARGS ?=
STAMP := $(VENV)/.installed-stamp
SNAKEMAKE := $(VENV)/bin/snakemake --cores $(CORES) $(if $(CONFIG),--configfile $(CONFIG),)

export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test bench dry-run clean env

env: $(STAMP)

$(STAMP): pyproject.toml src/valueguide/vocabularies.py
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	$(VENV)/bin/valueguide fetch-tokenizers
	touch $(STAMP)

run: $(STAMP)
	$(SNAKEMAKE) $(SMK_ARGS)
	@$(VENV)/bin/valueguide --log-level WARNING show-report --config config.yaml $(CONFIG)

dry-run: $(STAMP)
	$(SNAKEMAKE) -n $(SMK_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_decoding.py
	$(VENV)/bin/python bench/bench_cross_vocabulary.py
	$(VENV)/bin/python bench/bench_training.py

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf results .snakemake
