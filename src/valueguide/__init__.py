"""valueguide: inference-time alignment by value guidance (IVG / VAS).

The package is the product: every pipeline stage is a plain function here with a CLI entry
(``valueguide <stage> ...``); Snakemake only orders and caches the stages.
"""

__version__ = "0.1.0"
