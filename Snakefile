# valueguide: inference-time alignment by value guidance, as a cached DAG of stages.
# Thin on purpose: the config is validated, cut into per-stage slices, and every rule shells out
# to the package CLI (`valueguide <stage>`). See README "How it works".
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from valueguide.config import slice_location, stage_slice, world_dir
from valueguide.vocabularies import cache_root
from valueguide.warm_server import ENV as WARM_ENV
from valueguide.preflight import checked_or_exit
from valueguide.cluster import status_problem
from valueguide.provenance import setting_names, write_provenance

BASE_CONFIG = str(Path(workflow.basedir) / "config.yaml")
configfile: BASE_CONFIG

# Validation and the preflight check: every problem at once, one line each, before any job runs; an
# overlay (`extends:`) given without its base is refused.
CONFIG_FILES = [BASE_CONFIG, *workflow.config_settings.configfiles]  # in the order Snakemake merges them
config = checked_or_exit(config, dry_run=workflow.output_settings.dryrun, files=CONFIG_FILES)
R = config["results_dir"]
WORLD = str(world_dir(config))  # shared by the settings that name one world.dir
# This run's setting, named in its report: the config files, merged in this order.
SETTING_FILES = setting_names(workflow.basedir, CONFIG_FILES)
SETTING = " + ".join(SETTING_FILES)
# Every path in a shell command is quoted (`{...:q}`, shlex.quote): no config value is ever run.
# Each job's software: by default the interpreter that runs Snakemake (no PATH lookup, no other
# environment); under `--software-deployment-method conda`, the `python` of envs/valueguide.yaml, which
# every rule names, running the package from this checkout with the tokenizers fetched beside Snakemake.
CONDA_ENV = str(Path(workflow.basedir) / "envs" / "valueguide.yaml")
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    CLI = (f"VALUEGUIDE_CACHE={shlex.quote(str(cache_root()))} "
           f"PYTHONPATH={shlex.quote(str(Path(workflow.basedir) / 'src'))} python -m valueguide.cli --log-level INFO")
elif os.environ.get(WARM_ENV) and getattr(workflow.executor_plugin, "cli_prefix", "local") == "local":
    # Under `valueguide warm-run` (make run): jobs on this machine fork from a process that imported
    # everything once (valueguide/warm_server.py); the same command runs in its own process without one.
    CLI = f"{shlex.quote(sys.executable)} -m valueguide.warm --log-level INFO"
else:
    CLI = f"{shlex.quote(sys.executable)} -m valueguide.cli --log-level INFO"


SLICES = {}  # path -> text of each config slice a job of this run reads


def slice_path(stage, **wildcards):
    """The path of the stage's config slice, named by its content (valueguide.config.slice_location).

    Rules take these files as inputs and rule config_slice writes them, so a changed parameter reruns
    exactly the stages that read it, and nothing is written while the DAG is built (a dry run writes
    nothing). The world's slices live in the world folder, which several settings may share."""
    name = "-".join([stage, *wildcards.values()])
    folder = f"{WORLD if stage in ('world_corpus', 'world_lm', 'world_reward') else R}/configs"
    path, text = slice_location(folder, name, stage_slice(config, stage, **wildcards))
    SLICES[path] = text
    return path


def slice_text(path):
    if path not in SLICES:
        raise WorkflowError(f"{path} is no config slice of this config: ask for what reads it")
    return SLICES[path]


rule config_slice:
    output:
        "{folder}/configs/{name}/{digest}.json",
    wildcard_constraints:
        name="[^/]+",
        digest="[0-9a-f]{16}",
    localrule: True  # under SLURM too: a printf
    params:
        text=lambda wc, output: slice_text(output[0]),
        folder=lambda wc, output: os.path.dirname(output[0]),
    # Atomically; then the older slices of this name go (a flat one of an earlier version too), so that
    # going back to an earlier content writes its file again and reruns what reads it.
    shell:
        "printf %s {params.text:q} > {params.folder:q}/.{wildcards.digest}.tmp-$$ && "
        "mv {params.folder:q}/.{wildcards.digest}.tmp-$$ {output:q} && "
        "find {params.folder:q} -maxdepth 1 -type f ! -name {wildcards.digest}.json -delete && "
        "rm -f {params.folder:q}.json"


onstart:
    # Through SLURM (profiles/slurm): a cluster whose job states cannot be read would hang the run.
    plugin = workflow.executor_plugin
    if plugin is not None and plugin.cli_prefix == "slurm" and not workflow.dryrun:
        problem = status_problem(getattr(workflow.executor_settings, "status_command", None))
        if problem:
            sys.exit(f"error: the run cannot start: {problem}")
    # What makes these results (never in a dry run; no job reads it): results/provenance.json.
    write_provenance(config, SETTING_FILES, sys.argv)


onerror:
    print(f"The run stopped before its end (a job failed, or it was interrupted); the jobs that finished are kept. "
          f"Job logs: {R}/logs/. Run the same command again (make run) to go on: only the unfinished jobs run.",
          file=sys.stderr)


include: "workflow/rules/common.smk"
include: "workflow/rules/world.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output,
    default_target: True
