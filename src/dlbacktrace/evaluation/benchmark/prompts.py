"""A fixed set of short prompts whose next token is a fact, a continuation or a pattern.

Written for the generation benchmark (SmolLM2 next-token prediction); 100 prompts.
"""

from __future__ import annotations

_CAPITALS = [
    "France", "Germany", "Italy", "Spain", "Japan", "Canada", "Egypt", "Russia", "Greece",
    "Portugal", "Norway", "Sweden", "Poland", "Ireland", "Austria", "Kenya", "Peru", "Chile",
    "Cuba", "Turkey",
]  # fmt: skip
_COLOURS = [
    ("grass", "green"), ("the sky on a clear day", "blue"), ("snow", "white"),
    ("a ripe banana", "yellow"), ("coal", "black"), ("a ripe tomato", "red"),
    ("an orange", "orange"), ("a lemon", "yellow"), ("milk", "white"), ("blood", "red"),
]  # fmt: skip
_OPPOSITES = [
    "hot", "big", "fast", "happy", "light", "early", "open", "strong", "rich", "young",
    "high", "full", "hard", "wet", "loud",
]  # fmt: skip
_ANIMALS = [
    ("dog", "bark"), ("cat", "meow"), ("cow", "moo"), ("duck", "quack"), ("lion", "roar"),
    ("sheep", "bleat"), ("horse", "neigh"), ("snake", "hiss"), ("owl", "hoot"), ("pig", "oink"),
]  # fmt: skip
_SEQUENCES = [
    "1, 2, 3, 4,", "2, 4, 6, 8,", "Monday, Tuesday, Wednesday,", "January, February, March,",
    "A, B, C, D,", "10, 20, 30, 40,", "red, orange, yellow,", "one, two, three,",
    "5, 10, 15, 20,", "first, second, third,", "spring, summer, autumn,", "Z, Y, X, W,",
    "100, 200, 300,", "do, re, mi,", "alpha, beta, gamma,",
]  # fmt: skip
_FACTS = [
    "Water freezes at zero degrees", "The opposite of north is", "The largest planet in our "
    "solar system is", "The chemical symbol for gold is", "A week has seven",
    "The author of Romeo and Juliet is William", "The first man on the moon was Neil",
    "The tallest animal in the world is the", "Bees make", "The Earth orbits the",
    "Ice is frozen", "A triangle has three", "The color of a stop sign is",
    "Paris is the capital of", "The fastest land animal is the", "Two plus two equals",
    "The Statue of Liberty is in New", "Penguins live in", "A baby cat is called a",
    "The sun rises in the", "Dogs are often called man's best", "The currency of Japan is the",
    "Shakespeare was born in", "Light travels faster than", "The human heart has four",
    "The Great Wall is in", "Honey is made by", "Most plants need sunlight and",
    "The boiling point of water is one hundred degrees", "The moon orbits the",
]  # fmt: skip


def benchmark_prompts() -> list[str]:
    """The 100 prompts, in a fixed order."""
    prompts = [f"The capital of {c} is" for c in _CAPITALS]
    prompts += [f"The color of {thing} is" for thing, _ in _COLOURS]
    prompts += [f"The opposite of {w} is" for w in _OPPOSITES]
    prompts += [f"The sound a {a} makes is called a" for a, _ in _ANIMALS]
    prompts += _SEQUENCES + _FACTS
    return prompts[:100]
