# valueguide: inference-time alignment by value guidance, as a cached DAG of stages.
# Thin on purpose: the config is validated, cut into per-stage slices, and every rule shells out
# to the package CLI (`valueguide <stage>`). See README "How it works".
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from valueguide.config import stage_slice, world_dir, write_if_changed
from valueguide.vocabularies import cache_root
from valueguide.warm import ENV as WARM_ENV
from valueguide.preflight import checked_or_exit
from valueguide.cluster import status_problem
from valueguide.provenance import setting_files, write_provenance

configfile: str(Path(workflow.basedir) / "config.yaml")

# Validation and the preflight check: every problem at once, one line each, before any job runs.
config = checked_or_exit(config, dry_run=workflow.output_settings.dryrun)
R = config["results_dir"]
WORLD = str(world_dir(config))  # shared by the settings that name one world.dir
# This run's setting, named in its report: the config files, merged in this order.
SETTING_FILES = setting_files(workflow.basedir, workflow.configfiles, list(workflow.overwrite_configfiles))
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
    # everything once (valueguide/warm.py); the same command runs in its own process without one.
    CLI = f"{shlex.quote(sys.executable)} -m valueguide.warm --log-level INFO"
else:
    CLI = f"{shlex.quote(sys.executable)} -m valueguide.cli --log-level INFO"


def slice_path(stage, **wildcards):
    """Write the stage's config slice now (only if it changed) and return its path.

    Rules take these files as inputs, so a changed parameter reruns exactly the stages that read it.
    The world's slices live in the world folder, which several settings may share."""
    name = "-".join([stage, *wildcards.values()])
    path = f"{WORLD if stage in ('world_corpus', 'world_lm', 'world_reward') else R}/configs/{name}.json"
    write_if_changed(stage_slice(config, stage, **wildcards), path)
    return path


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


include: "workflow/rules/world.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output,
    default_target: True
