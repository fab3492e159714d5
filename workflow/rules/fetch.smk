# Hub models (and alpaca_eval's df_gamed.csv, the judge's API key): downloaded once when online,
# checked when offline, before any job that needs them. Tiny-world runs have no fetch job.


rule fetch:
    conda:
        CONDA_ENV
    input:
        slice_path("fetch") if HUB_MODELS else [],
    output:
        FETCHED,
    log:
        f"{R}/logs/fetch/fetch.log",
    benchmark:
        f"{R}/benchmarks/fetch/fetch.tsv"
    shell:
        "{CLI} fetch --slice {input:q} --out {output:q} 2> {log:q}"
