# Tables, figures and the printed summary.


rule report:
    input:
        world=f"{WORLD}/summary.json" if "world" in config else [],
        samples=SAMPLES,
    output:
        f"{R}/report/summary.md",
    log:
        f"{R}/logs/report/summary.log",
    benchmark:
        f"{R}/benchmarks/report/summary.tsv"
    shell:
        "{CLI} report --samples {input.samples} --world-summary '{input.world}' --out {output} 2> {log}"
