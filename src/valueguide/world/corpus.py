"""A generator of short movie-review-like texts with a sentiment label, and of tiny instructions.

Reviews open neutrally ("I watched this film last night and ...") so that a prompt made of the
opening leaves the sentiment of the continuation open: base-policy samples then spread over both
labels, which is what gives guidance something to do. Each later sentence agrees with the review's
leaning with probability ``agreement``.

A review's ``score`` (what the gold reward learns) adds up, sentence by sentence, the polarity times
the *intensity* of the sentence's sentiment words. Within each word list the words are drawn Zipf-like
and the rarer a word, the stronger it is: a reviewer mostly says "fun" and "great", rarely "superb".
So the score has no ceiling a few steering choices reach: turning a review positive is easy, making
it strong takes the rare words a base policy seldom proposes, which leaves guided methods headroom.
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
        "adj": ["fun", "great", "clever", "charming", "moving", "touching", "beautiful", "delightful",
                "gripping", "wonderful", "excellent", "fantastic", "brilliant", "superb"],
        "verb": ["enjoyed", "loved", "admired", "savoured", "adored"],
        "feeling": ["happy", "smiling", "moved", "inspired", "thrilled"],
        "verdict": ["worth every minute", "a joy to watch", "a must see", "a real gem", "a classic"],
        "advice": ["take your friends", "go and see it", "buy the dvd", "watch it twice"],
    },
    "neg": {
        "adj": ["silly", "weak", "bland", "dull", "messy", "poor", "lazy", "clumsy", "boring", "tedious",
                "painful", "terrible", "dreadful", "awful"],
        "verb": ["endured", "disliked", "regretted", "resented", "hated"],
        "feeling": ["tired", "bored", "annoyed", "disappointed", "angry"],
        "verdict": ["a chore to watch", "a big letdown", "a flop", "a total mess", "a waste of time"],
        "advice": ["watch something else", "stay at home", "skip it", "save your money"],
    },
}
ZIPF_EXPONENT = 1.2
WEAKEST, STRONGEST = 0.5, 3.0


def _word_weights(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** ZIPF_EXPONENT
    return weights / weights.sum()


def _intensities(n: int) -> np.ndarray:
    """From the commonest word's WEAKEST to the rarest's STRONGEST, evenly."""
    return np.round(np.linspace(WEAKEST, STRONGEST, n), 3)


SENTIMENT_KINDS = ("adj", "verb", "feeling", "verdict", "advice")


def _lexicon() -> dict[str, float]:
    """Every sentiment phrase with its signed intensity."""
    return {word: float(strength) if polarity == "pos" else -float(strength)
            for polarity, kinds in WORDS.items() for words in kinds.values()
            for word, strength in zip(words, _intensities(len(words)))}


LEXICON = _lexicon()


def text_score(text: str) -> float:
    """The world's own score of any text, whole review or not: the signed intensities of the sentiment
    phrases it holds, summed (a review's ``score`` is this). The gold reward model learns it from the
    corpus's reviews; on other texts (a guided model's, cut off or garbled) the two can part."""
    padded = f" {text} "
    return round(sum(padded.count(f" {phrase} ") * value for phrase, value in LEXICON.items()), 6)
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
    label: int  # 1 positive, 0 negative: the sign of the score
    score: float  # the sum over sentences of polarity (+1 / -1) times intensity

    @property
    def text(self) -> str:
        return f"{self.opening} {self.body}"


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _pick_word(rng: np.random.Generator, polarity: str, kind: str) -> tuple[str, float]:
    """A sentiment word drawn Zipf-like from its list, and its intensity."""
    words = WORDS[polarity][kind]
    i = int(rng.choice(len(words), p=_word_weights(len(words))))
    return words[i], float(_intensities(len(words))[i])


def _fill(rng: np.random.Generator, template: str, polarity: str, genre: str) -> tuple[str, float]:
    """The sentence, and the summed intensity of the sentiment words it uses."""
    aspect, aspect2 = rng.choice(ASPECTS, size=2, replace=False)
    picked = {kind: _pick_word(rng, polarity, kind) for kind in SENTIMENT_KINDS}
    picked["adj2"] = _pick_word(rng, polarity, "adj")
    text = template.format(
        aspect=aspect, aspect2=aspect2, genre=genre, person=_pick(rng, PERSONS), director=_pick(rng, DIRECTORS),
        **{kind: word for kind, (word, _) in picked.items()})
    intensity = sum(strength for kind, (_, strength) in picked.items() if "{" + kind + "}" in template)
    return text, intensity


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
    """The score can be read off the text word by word; mixed reviews keep it graded around 0."""
    leaning = int(rng.integers(2))
    genre = _pick(rng, GENRES)
    opening, _ = _fill(rng, _pick(rng, OPENINGS), "pos", genre)
    n_sentences = int(rng.integers(2, 5))
    sentences, score = [], 0.0
    for _ in range(n_sentences):
        positive = (rng.random() < agreement) == bool(leaning)
        text, intensity = _fill(rng, _pick(rng, SENTENCES), "pos" if positive else "neg", genre)
        sentences.append(text)
        score += intensity if positive else -intensity
    while round(score, 6) == 0:  # break a tie in the text itself, so the label is always readable
        text, intensity = _fill(rng, _pick(rng, SENTENCES), "pos" if leaning else "neg", genre)
        sentences.append(text)
        score += intensity if leaning else -intensity
    score = round(score, 6)
    return Review(opening=opening, body=" ".join(sentences), label=int(score > 0), score=score)


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
