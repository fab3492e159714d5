"""The tiny offline world: a review corpus, a tokenizer, tiny LMs, a gold reward and prompts.

It stands in for the hub models and datasets of the paper so that the whole pipeline runs, and is
tested, on a CPU with no network. Every piece is seeded and built deterministically.
"""
