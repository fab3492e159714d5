# Tables, figures and the printed summary.


rule report:
    conda:
        CONDA_ENV
    input:
        cfg=slice_path("report"),
        world=f"{R}/world_summary.json" if config.get("world") else [],
        samples=SAMPLES,
        value=rules.diagnose_value.output[0],
        implicit=rules.fit_implicit.output[0],
        evaluations=EVALUATIONS,
    output:
        summary=report(f"{R}/report/summary.md", caption="../report/summary.rst", category="Summary"),
        tables=report(f"{R}/report/tables.md", caption="../report/tables.rst", category="Tables"),
        claims=f"{R}/report/claims.csv",
        figures=[report(f"{R}/report/{name}.png", caption=f"../report/{name}.rst", category="Figures")
                 for name in FIGURES]
        + [report(f"{R}/report/{name}.png", caption=f"../report/{caption}.rst", category="Frontiers")
           for name, caption in FRONTIER_FIGURES],
    params:
        world=f"--world-summary {shlex.quote(f'{R}/world_summary.json')}" if config.get("world") else "",
        reward=(f"--reward-metrics {shlex.quote(REWARD_METRICS)} --reward-scores {shlex.quote(REWARD_SCORES)}"
                if config["evaluate"]["reward"] else ""),
        alpaca=f"--alpaca-metrics {shlex.quote(ALPACA_METRICS)}" if config["evaluate"].get("alpaca") else "",
        setting=SETTING,
    log:
        f"{R}/logs/report/report.log",
    benchmark:
        f"{R}/benchmarks/report/report.tsv"
    shell:
        "{CLI} report --slice {input.cfg:q} --samples {input.samples:q} {params.world} "
        "--value-metrics {input.value:q} --implicit-metrics {input.implicit:q} {params.reward} {params.alpaca} "
        "--config-name {params.setting:q} --out-dir {R:q}/report 2> {log:q}"
