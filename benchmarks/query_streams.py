"""Query texts for the serving load tests: a few popular queries repeated, or a stream that never repeats.

`REPEATED` is the 44 queries the load test has always drawn from: with the
server's query-text cache on, nearly every one is a cache hit. `FreshQueries`
composes captions of about the same length (2-5 words; padded to a batch's
longest, 7.6 tokens a row against the 44's 6.9) from word lists,
walking the product of the lists in a shuffled order without replacement, so
no text is ever sent twice in one stream: every query pays the text encoder.
"""

from __future__ import annotations

import math
import random

REPEATED = [
    "a red heart", "smiling face with sunglasses", "a cat", "a dog face", "flag of france", "a green apple",
    "pizza", "a rocket", "thumbs up", "crying face", "a yellow star", "a house with a garden", "a train",
    "the moon", "a clock showing three", "a musical note", "a soccer ball", "an angry face", "a snowman",
    "a birthday cake", "a blue car", "a tree", "a fish", "a laptop computer", "a red apple", "fire",
    "a crown", "money with wings", "a face with tears of joy", "a woman dancing", "a man running", "a ghost",
    "a pile of poo", "an umbrella with rain drops", "a hot beverage", "a penguin", "the flag of japan",
    "a light bulb", "a key", "a lock", "a book", "a map of the world", "a volcano", "an airplane",
]

# Disjoint word lists, so a composed text names its parts unambiguously ("" = part left out).
SIZES = ["", "small", "big", "tiny", "old", "happy", "sad", "sleepy", "shiny", "broken", "funny", "angry"]
COLOURS = ["", "red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown", "grey"]
THINGS = ["cat", "dog", "heart", "face", "star", "house", "train", "moon", "clock", "ball", "snowman", "cake",
          "car", "tree", "fish", "laptop", "apple", "crown", "ghost", "umbrella", "penguin", "bulb", "key",
          "book", "volcano", "airplane", "rocket", "flag", "guitar", "bicycle", "robot", "flower", "bird",
          "monkey", "hat", "shoe", "phone", "pizza", "boat", "bus", "horse", "cow", "pig", "mouse", "rabbit",
          "bear", "lion", "tiger", "frog", "snake", "duck", "owl", "sun", "cloud", "leaf", "banana", "lemon",
          "bread", "cup", "bottle", "chair", "bed", "door", "window", "bell", "drum", "camera", "lamp", "candle",
          "sword", "shield", "medal", "ring", "bag", "box", "truck", "ship", "bridge", "tower"]
DOINGS = ["", "smiling", "crying", "running", "sleeping", "flying", "dancing", "laughing", "winking", "jumping",
          "outside", "underwater"]
PARTS = (SIZES, COLOURS, THINGS, DOINGS)
STREAM_SIZE = math.prod(len(p) for p in PARTS)  # distinct texts one stream can send


def compose(number: int) -> str:
    """The `number`-th text of the product of the word lists (0 <= number < STREAM_SIZE); injective."""
    words = []
    for part in PARTS:
        number, digit = divmod(number, len(part))
        words.append(part[digit])
    return " ".join(["a", *(w for w in words if w)])


class FreshQueries:
    """A never-repeating stream of composed texts: its `STREAM_SIZE` texts in a seeded shuffled order."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        # i -> (a * i + b) mod N is a permutation when a is coprime to N: no list of N numbers is kept.
        self._a = next(a for a in iter(lambda: rng.randrange(1, STREAM_SIZE), None) if math.gcd(a, STREAM_SIZE) == 1)
        self._b = rng.randrange(STREAM_SIZE)
        self._next = 0

    def __call__(self, rng: random.Random | None = None) -> str:
        """The next text; `rng` is ignored (the stream, not the client, decides)."""
        if self._next >= STREAM_SIZE:
            raise RuntimeError(f"the fresh query stream is used up after {STREAM_SIZE} texts")
        number = (self._a * self._next + self._b) % STREAM_SIZE
        self._next += 1
        return compose(number)


def repeated_query(rng: random.Random) -> str:
    """One of the 44 popular queries, drawn by the client's own `rng`."""
    return rng.choice(REPEATED)
