"""Prompt templates: every model may see the prompt its own way; responses are shared."""

from __future__ import annotations

import string


def validate_template(template: str) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if fields != {"prompt"}:
        raise ValueError(f"a prompt template must use exactly the field {{prompt}}; got {sorted(fields)} in {template!r}")


def render(template: str, prompt: str) -> str:
    """Fill a ``{prompt}`` template. ``chat`` means: use the tokenizer's chat template (see render_for)."""
    return template.replace("{prompt}", prompt)


def render_for(tokenizer, template: str, prompt: str) -> str:
    """Render with the model's chat template when the template is the word ``chat``."""
    if template == "chat":
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return render(template, prompt)
