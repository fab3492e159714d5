"""A small mutation check: plant one bug at a time in a copy of the package and see whether the tests fail.

Each planted bug is a one-line change to decoding, value-target, value-fit or evaluation code that a
careless edit could make; the tests named beside it must catch it. A bug that survives names a hole
in the suite. Run by hand (each bug reruns its tests: a few minutes in all):

    python bench/planted_bugs.py [--only NAME ...] [--out planted_bugs.json]

The copy lives in a temporary folder put first on PYTHONPATH, so the working tree is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    name: str
    file: str  # under src/valueguide
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest node ids or files, relative to the repo


DECODING = ("tests/test_decoding_distributions.py", "tests/test_decoding_search.py")
TARGETS = ("tests/test_value_targets.py",)
EVALUATION = ("tests/test_evaluate.py",)

BUGS = (
    # point 7 of the issue "Fail early and safely": both survived the suite once
    Bug("whitening drops the std rescale", "value/fit.py", "value_model.rescale(std, mean)",
        "value_model.rescale(1.0, mean)", ("tests/test_value_fit.py",)),
    Bug("every generate batch seeded alike", "generate.py", 'manual_seed(derive_seed(seed, "generate", b))',
        'manual_seed(derive_seed(seed, "generate", 0))', ("tests/test_decoding_stage.py",)),
    # value targets
    Bug("TD(lambda) without lambda", "value/targets.py", "advantage = delta + gamma * lam * next_advantage",
        "advantage = delta + gamma * next_advantage", TARGETS),
    Bug("TD(lambda) bootstraps from the current value", "value/targets.py",
        "delta = step_rewards[:, t] + gamma * next_value - values[:, t]",
        "delta = step_rewards[:, t] + gamma * values[:, t] - values[:, t]", TARGETS),
    Bug("returns on padding", "value/targets.py", "returns[:, t] = torch.where(real, values[:, t] + advantage, 0.0)",
        "returns[:, t] = values[:, t] + advantage", TARGETS),
    # decoding
    Bug("sampling ignores the temperature", "decoding/sampler.py", "z = logits / self.temperature", "z = logits",
        DECODING),
    Bug("top-k keeps one token too few", "decoding/sampler.py", "z.masked_fill(z < kth,", "z.masked_fill(z <= kth,",
        DECODING),
    Bug("nucleus drops the token that crosses top_p", "decoding/sampler.py", "before >= self.top_p",
        "sorted_p.cumsum(-1) >= self.top_p", DECODING),
    Bug("inverse CDF one token late", "decoding/sampler.py", "cdf = probs.double().cumsum(-1)",
        "cdf = probs.double().cumsum(-1) - probs.double()", DECODING),
    Bug("EFT adds the log-ratio unweighted", "decoding/guidance.py", "return logits[:, :width] + self.w * psi",
        "return logits[:, :width] + psi", DECODING),
    Bug("EFT's log-ratio upside down", "decoding/guidance.py",
        "psi = torch.log_softmax(tuned[:, :width], -1) - torch.log_softmax(untuned[:, :width], -1)",
        "psi = torch.log_softmax(untuned[:, :width], -1) - torch.log_softmax(tuned[:, :width], -1)", DECODING),
    Bug("VAS does not centre the values", "decoding/guidance.py",
        'q = rows.peek("value", cand).to(logits.device)\n        bonus = self.beta * (q - q.mean(-1, keepdim=True))',
        'q = rows.peek("value", cand).to(logits.device)\n        bonus = self.beta * q', DECODING),
    Bug("VAS across vocabularies draws tokens outside its candidates", "decoding/guidance.py",
        "cand, bonus, mask_outside=True)", "cand, bonus, mask_outside=False)", ("tests/test_text_stream.py",)),
    Bug("CBS keeps the worst chunks", "decoding/search.py", ".sort(dim=1, descending=True, stable=True)",
        ".sort(dim=1, descending=False, stable=True)", DECODING),
    # evaluation
    Bug("reward standard error without the square root", "evaluate/reward_task.py",
        'g["reward"].std(ddof=1) / np.sqrt(n)', 'g["reward"].std(ddof=1) / n', EVALUATION),
    Bug("instruction difficulty with the wrong sign", "evaluate/gamed.py", "return -(effect - effect.mean())",
        "return effect - effect.mean()", EVALUATION),
    Bug("average length counts words", "evaluate/alpaca.py", 'np.mean([len(r["output"]) for r',
        'np.mean([len(r["output"].split()) for r', EVALUATION),
)


def _plant(bug: Bug, package: Path) -> None:
    path = package / bug.file
    text = path.read_text()
    if text.count(bug.old) != 1:
        raise SystemExit(f"{bug.name}: {bug.old!r} occurs {text.count(bug.old)} times in {bug.file}; update the bug")
    path.write_text(text.replace(bug.old, bug.new))


def _caught(bug: Bug) -> tuple[bool, float]:
    """Whether the bug's tests fail with the bug planted in a copy of the package."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        _plant(bug, src / "valueguide")
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *bug.tests],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        return proc.returncode == 1, time.perf_counter() - start  # 1: tests failed; other codes: it did not run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="names (or parts of names) of the bugs to plant")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    bugs = [b for b in BUGS if not args.only or any(part in b.name for part in args.only)]
    rows = []
    for bug in bugs:
        caught, seconds = _caught(bug)
        rows.append({"bug": bug.name, "file": bug.file, "caught": caught, "seconds": round(seconds, 1)})
        print(f"{'caught  ' if caught else 'SURVIVED'} {bug.name} ({bug.file}, {seconds:.0f} s)", flush=True)
    score = sum(r["caught"] for r in rows)
    print(f"planted bugs caught: {score} of {len(rows)}")
    if args.out:
        Path(args.out).write_text(json.dumps({"caught": score, "planted": len(rows), "bugs": rows}, indent=2) + "\n")
    sys.exit(0 if score == len(rows) else 1)


if __name__ == "__main__":
    main()
