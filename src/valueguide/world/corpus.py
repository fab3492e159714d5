"""A generator of short movie-review-like texts with a sentiment label, and of tiny instructions.

Reviews open neutrally ("I watched this film last night and ...") so that a prompt made of the
opening leaves the sentiment of the continuation open: base-policy samples then spread over both
labels, which is what gives guidance something to do. Each later sentence agrees with the review's
leaning with probability ``agreement``; the label is the majority, so it is learnable but graded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPENINGS = [
    "i watched this film last night and",
    "i saw this movie with my {person} and",
    "we rented this {genre} on a rainy sunday and",
    "after all the hype about this {genre} ,",
    "the new {genre} from {director} is here and",
    "my {person} told me to see this {genre} and",
    "i went to the cinema for this {genre} and",
    "this is the second {genre} by {director} and",
    "having read the book first ,",
    "on paper this {genre} sounds simple , but",
]
PERSONS = ["wife", "husband", "friend", "brother", "sister", "dad", "mom", "kids", "class"]
GENRES = ["film", "movie", "thriller", "comedy", "drama", "western", "musical", "horror film"]
DIRECTORS = ["kurosawa", "spielberg", "a new director", "the studio", "an old master", "nolan"]

ASPECTS = ["acting", "plot", "script", "music", "ending", "cast", "dialogue", "direction",
           "story", "camera work", "pacing", "soundtrack", "lead actor", "villain"]
WORDS = {
    "pos": {
        "adj": ["great", "wonderful", "brilliant", "superb", "moving", "charming", "delightful",
                "excellent", "beautiful", "fantastic", "clever", "gripping", "touching", "fun"],
        "verb": ["loved", "enjoyed", "admired", "adored", "savoured"],
        "feeling": ["smiling", "happy", "moved", "thrilled", "inspired"],
        "verdict": ["a must see", "a real gem", "worth every minute", "a joy to watch", "a classic"],
        "advice": ["go and see it", "watch it twice", "buy the dvd", "take your friends"],
    },
    "neg": {
        "adj": ["awful", "boring", "terrible", "dull", "painful", "weak", "clumsy", "dreadful",
                "bland", "poor", "silly", "tedious", "lazy", "messy"],
        "verb": ["hated", "disliked", "regretted", "endured", "resented"],
        "feeling": ["bored", "angry", "tired", "annoyed", "disappointed"],
        "verdict": ["a waste of time", "a total mess", "a big letdown", "a chore to watch", "a flop"],
        "advice": ["skip it", "stay at home", "save your money", "watch something else"],
    },
}
SENTENCES = [
    "the {aspect} was {adj} .",
    "the {aspect} is {adj} and the {aspect2} is {adj2} .",
    "i {verb} the {aspect} .",
    "it left me {feeling} .",
    "overall it is {verdict} .",
    "{advice} .",
    "honestly the {aspect} felt {adj} .",
    "what a {adj} {genre} .",
]
INSTRUCTION_TEMPLATES = [
    ("write a {label_word} review of a {genre} .", None),
    ("write a short review of the {aspect} in a {genre} .", None),
    ("tell me what you thought of the new {genre} .", None),
]


@dataclass(frozen=True)
class Review:
    opening: str
    body: str
    label: int  # 1 positive, 0 negative

    @property
    def text(self) -> str:
        return f"{self.opening} {self.body}"


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _fill(rng: np.random.Generator, template: str, polarity: str, genre: str) -> str:
    words = WORDS[polarity]
    aspect, aspect2 = rng.choice(ASPECTS, size=2, replace=False)
    return template.format(
        aspect=aspect, aspect2=aspect2, adj=_pick(rng, words["adj"]), adj2=_pick(rng, words["adj"]),
        verb=_pick(rng, words["verb"]), feeling=_pick(rng, words["feeling"]),
        verdict=_pick(rng, words["verdict"]), advice=_pick(rng, words["advice"]), genre=genre,
        person=_pick(rng, PERSONS), director=_pick(rng, DIRECTORS),
    )


def filler(rng: np.random.Generator, n: int) -> str:
    """``n`` sentences that say nothing about the film's quality (an opening without its turn): what a
    verbose answer adds to a review without making it better or worse."""
    sentences = []
    for _ in range(n):
        opening = _pick(rng, OPENINGS).format(person=_pick(rng, PERSONS), genre=_pick(rng, GENRES),
                                              director=_pick(rng, DIRECTORS))
        sentences.append(opening.rsplit(" ", 1)[0].rstrip(" ,") + " .")
    return " ".join(sentences)


def make_review(rng: np.random.Generator, agreement: float = 0.8) -> Review:
    """The label is the majority polarity of the sentences, so it can be read off the text, while
    mixed reviews keep the reward graded rather than binary."""
    leaning = int(rng.integers(2))
    genre = _pick(rng, GENRES)
    opening = _fill(rng, _pick(rng, OPENINGS), "pos", genre)
    n_sentences = int(rng.integers(2, 5))
    sentences, balance = [], 0
    for _ in range(n_sentences):
        positive = (rng.random() < agreement) == bool(leaning)
        balance += 1 if positive else -1
        sentences.append(_fill(rng, _pick(rng, SENTENCES), "pos" if positive else "neg", genre))
    if balance == 0:  # break a tie in the text itself, so the label is always readable
        sentences.append(_fill(rng, _pick(rng, SENTENCES), "pos" if leaning else "neg", genre))
        balance += 1 if leaning else -1
    label = int(balance > 0)
    return Review(opening=opening, body=" ".join(sentences), label=label)


def make_reviews(n: int, seed: int, agreement: float = 0.8) -> list[Review]:
    rng = np.random.default_rng(seed)
    return [make_review(rng, agreement) for _ in range(n)]


def make_instructions(n: int, seed: int) -> list[tuple[str, str]]:
    """(instruction, reference output) pairs for the tiny instruction-following task.

    The reference is a middling review (its sentences disagree half the time), so that a guided
    model that writes more positive reviews than the reference can win against it.
    """
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        genre = _pick(rng, GENRES)
        template, _ = INSTRUCTION_TEMPLATES[int(rng.integers(len(INSTRUCTION_TEMPLATES)))]
        instruction = template.format(label_word="positive", genre=genre, aspect=_pick(rng, ASPECTS))
        reference = make_review(rng, agreement=0.5)
        pairs.append((instruction, reference.text))
    return pairs
