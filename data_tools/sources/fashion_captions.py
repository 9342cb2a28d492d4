"""Captions for Fashion-MNIST images, in two styles.

- `class`: prompt templates around the class name ("a photo of a pullover"). A model
  pretrained on these learns the test prompts themselves: zero-shot is then supervised
  classification in disguise.
- `retail`: what a shop listing would say: everyday names for the item ("jumper",
  "chinos", "trainers", never the dataset's label strings) and its tone (read from the
  pixels). Zero-shot with the class names must then go through the text tower's sense of
  words, as it does for a web-pretrained CLIP, and labelled examples have something to add.
"""

from __future__ import annotations

import itertools
import random

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CAPTION_STYLES = ("class", "retail")

TEMPLATES = (
    "a photo of {article} {name}",
    "{article} {name}",
    "a black and white photo of {article} {name}",
    "a low resolution photo of {article} {name}",
    "a product photo of {article} {name}",
)

RETAIL_NAMES = {
    "T-shirt/top": ("tee", "crew neck tee", "graphic tee", "singlet", "cotton tee", "short sleeve tee", "camisole"),
    "Trouser": ("jeans", "slacks", "chinos", "pants", "leggings", "joggers"),
    "Pullover": ("sweater", "jumper", "knit sweater", "sweatshirt", "hoodie", "crew neck knit"),
    "Dress": ("gown", "frock", "sundress", "evening gown", "midi frock", "party frock"),
    "Coat": ("jacket", "parka", "overcoat", "trench", "anorak", "windbreaker"),
    "Sandal": ("flip-flops", "slides", "strappy heels", "espadrilles", "summer heels", "open toe heels"),
    "Shirt": ("button-down", "blouse", "flannel", "oxford", "long sleeve button-up", "denim button-up"),
    "Sneaker": ("trainers", "running shoes", "kicks", "tennis shoes", "canvas low-tops", "gym shoes"),
    "Bag": ("handbag", "purse", "tote", "backpack", "satchel", "clutch"),
    "Ankle boot": ("booties", "chelsea boots", "short boots", "heeled booties", "combat boots", "suede booties"),
}
RETAIL_TEMPLATES = (
    "{tone} {name}",
    "{name} for sale",
    "new {tone} {name}, free shipping",
    "women's {name}",
    "{name} - {tone}",
    "buy {tone} {name} online",
)
RETAIL_VARIANTS = 3  # captions per image; training picks one per epoch


def class_captions(class_name: str) -> tuple[str, ...]:
    """The class name in every template, as it reads in a sentence: "T-shirt/top" -> "t-shirt or top"."""
    name = class_name.lower().replace("/", " or ")
    article = "an" if name[0] in "aeiou" else "a"
    return tuple(t.format(article=article, name=name) for t in TEMPLATES)


def tone(pixels: bytes) -> str:
    """Shade of the item: Fashion-MNIST stores negated intensities, so bright pixels were dark cloth."""
    ink = [p for p in pixels if p > 20]
    if not ink:
        return "plain"
    mean = sum(ink) / len(ink)
    return "dark" if mean >= 160 else "grey" if mean >= 90 else "light"


def retail_captions(class_name: str, pixels: bytes, key: str) -> tuple[str, ...]:
    """RETAIL_VARIANTS different shop-listing captions, drawn with a generator seeded by the
    sample key (the same shards on every build)."""
    shade = tone(pixels)
    pairs = list(itertools.product(RETAIL_TEMPLATES, RETAIL_NAMES[class_name]))
    chosen = random.Random(key).sample(pairs, RETAIL_VARIANTS)
    return tuple(template.format(tone=shade, name=name) for template, name in chosen)
