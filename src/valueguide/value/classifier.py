"""Stage fit_classifier: FUDGE's prefix classifier, fitted on the base policy's samples.

A sample's label is whether its reward is above the median reward of the samples; every prefix of
its response carries that label (FUDGE's training). The classifier is a ``ValueModel`` with a token
head, so one pass gives ``c(s, a)``, the logit of ``P(label = 1 | prefix s + a)``, for every next
token ``a``: the loop of stage fit_value fits it with a binary cross-entropy (``PREFIX_LABELS``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..artifacts import ArtifactError, atomic_dir, write_json
from ..models import LoadOptions, load_own_tokenizer
from .fit import PREFIX_LABELS, fit_from_samples, read_samples
from .model import ValueModel

log = logging.getLogger(__name__)

LABEL = "reward above the median reward of the samples"


def run_fit_classifier(config: dict, samples_path: str | Path, out_dir: str | Path, world_dir=None) -> dict:
    """Label the samples, fit the classifier (less the held-out prompts of stage fit_value), and write
    the model folder with ``metrics.json`` (held-out accuracy and AUC of the full responses) atomically."""
    cfg = config["fit_classifier"]
    samples = read_samples(samples_path)
    threshold = float(samples.reward.median())
    labels = (samples.reward > threshold).astype(float)
    if labels.nunique() < 2:
        raise ArtifactError(f"{samples_path}: every sample has the reward {threshold}: no label to learn")
    meta = {"label": LABEL, "threshold": threshold}
    model, tokenizer, _, metrics = fit_from_samples(config, cfg, samples.assign(reward=labels), "token", meta,
                                                    world_dir, PREFIX_LABELS)
    last = metrics["epochs"][-1]
    metrics = {"label": LABEL, "threshold": threshold, "positive_fraction": float(labels.mean()),
               **{k: v for k, v in last.items() if k.startswith("heldout_")}, **metrics}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, tokenizer=tokenizer)
        write_json(metrics, tmp / "metrics.json")
    log.info("fit_classifier: %s", {k: v for k, v in metrics.items() if k != "epochs"})
    return metrics


def load_classifier(classifier_dir, backbone: str, world_dir=None, options: LoadOptions = LoadOptions()):
    """``(classifier, its tokenizer)`` from stage fit_classifier's folder (tokenizer saved there, or ``backbone``'s)."""
    if classifier_dir is None:
        raise ValueError("this method needs FUDGE's classifier: pass classifier_path (stage fit_classifier's output)")
    classifier = ValueModel.from_pretrained(classifier_dir, options)
    return classifier, load_own_tokenizer(str(classifier_dir), classifier.meta.get("backbone", backbone),
                                          world_dir, options)
