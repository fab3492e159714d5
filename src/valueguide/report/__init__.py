"""Tables, figures and printed summaries of the pipeline's results."""


def name_heading(document: str, config_name: str | None) -> str:
    """The document with its heading (its first line) naming the config files that made the run: the two
    settings' reports are otherwise alike at a glance."""
    if not config_name:
        return document
    heading, rest = document.split("\n", 1)
    return f"{heading}: {config_name}\n{rest}"
