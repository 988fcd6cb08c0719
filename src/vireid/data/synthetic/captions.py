"""Captions of synthetic people, made from their attributes, and attribute queries.

A visible image of an identity gets a caption of the kind a person would write for a
photograph: garment colours by name, pattern, sleeve length, kind of lower garment,
hair length and colour, accessories, build and view ("a photo of a slim person in a
red striped t-shirt and a long black skirt, carrying a backpack, seen from behind").
:func:`caption` draws one phrasing from a generator, so a seed fixes every caption;
each call varies the wording, the order and the set of details, and often leaves the
colours out. Colour words are the easiest words to learn from visible images and say
nothing about an infrared one, so shape, pattern, garment-kind, accessory and hair
words appear in more captions than colours do.

Infrared images get no captions: the synthetic CLIP, like CLIP, never sees infrared.

:data:`ATTRIBUTE_QUERIES` are short texts ("a photo of a person wearing a skirt") with
the predicate that says which identities they describe, for zero-shot retrieval.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .people import PersonAttributes

__all__ = [
    "ATTRIBUTE_QUERIES",
    "AttributeQuery",
    "caption",
    "color_name",
    "describe",
    "hair_color_name",
]

VIEW_PHRASES: dict[str, tuple[str, ...]] = {
    "front": ("seen from the front", "facing the camera"),
    "back": ("seen from behind", "seen from the back", "walking away"),
    "side": ("seen from the side", "in profile"),
}


# --------------------------------------------------------------------------- words


def color_name(rgb: tuple[float, float, float]) -> str:
    """Basic colour term of an sRGB colour in 0..1 (hue bins of the HSV wheel).

    The generator's neutral garments are exact greys (black, dark grey, grey,
    white); saturated ones are named by hue, with "dark" (or "brown" for dark
    oranges and yellows) below value 0.45.
    """
    h, s, v = colorsys.rgb_to_hsv(*(float(c) for c in rgb))
    if s < 0.2:
        if v < 0.22:
            return "black"
        if v < 0.47:
            return "dark grey"
        return "grey" if v < 0.75 else "white"
    for limit, hue in (
        (0.04, "red"),
        (0.10, "orange"),
        (0.17, "yellow"),
        (0.45, "green"),
        (0.53, "cyan"),
        (0.72, "blue"),
        (0.80, "purple"),
        (0.93, "pink"),
        (1.01, "red"),
    ):
        if h < limit:
            name = hue
            break
    if v < 0.45:
        return "brown" if name in ("orange", "yellow") else f"dark {name}"
    return name


def hair_color_name(rgb: tuple[float, float, float]) -> str:
    """Hair colour term; the generator's four hair tones by brightness."""
    v = max(float(c) for c in rgb)
    if v < 0.14:
        return "black"
    if v < 0.3:
        return "dark brown"
    return "brown" if v < 0.55 else "blond"


def _sleeves(attrs: PersonAttributes) -> str:
    if attrs.sleeve_length < 0.2:
        return "sleeveless"
    return "short" if attrs.sleeve_length < 0.7 else "long"


def _build(attrs: PersonAttributes) -> str | None:
    """"slim" / "broad-shouldered" for the lightest and heaviest builds, else None."""
    if attrs.shoulder_width >= 0.124:
        return "broad-shouldered"
    if attrs.shoulder_width <= 0.106 and attrs.limb_thickness < 1.0:
        return "slim"
    return None


@dataclass(frozen=True)
class Description:
    """The attribute words of one identity (every field a plain word or phrase)."""

    upper_color: str
    upper_color2: str
    upper_pattern: str  # solid | stripes | checks | logo | two_tone
    sleeves: str  # sleeveless | short | long
    lower_kind: str  # trousers | shorts | skirt
    lower_long: bool  # skirt: below the knee
    lower_color: str
    lower_color2: str
    lower_pattern: str
    hair_length: str
    hair_color: str
    backpack: str | None  # colour, or None when there is none
    shoulder_bag: str | None
    hat: str | None
    glasses: bool
    build: str | None


def describe(attrs: PersonAttributes) -> Description:
    """The words of ``attrs`` (colour names, pattern, garment kinds, accessories, build)."""
    return Description(
        upper_color=color_name(attrs.upper.color),
        upper_color2=color_name(attrs.upper.color_secondary),
        upper_pattern=attrs.upper.pattern,
        sleeves=_sleeves(attrs),
        lower_kind=attrs.lower_kind,
        lower_long=attrs.lower_kind == "skirt" and attrs.lower_length >= 0.62,
        lower_color=color_name(attrs.lower.color),
        lower_color2=color_name(attrs.lower.color_secondary),
        lower_pattern=attrs.lower.pattern,
        hair_length=attrs.hair_length,
        hair_color=hair_color_name(attrs.hair_color),
        backpack=color_name(attrs.backpack) if attrs.backpack is not None else None,
        shoulder_bag=color_name(attrs.shoulder_bag) if attrs.shoulder_bag is not None else None,
        hat=color_name(attrs.hat) if attrs.hat is not None else None,
        glasses=attrs.glasses,
        build=_build(attrs),
    )


# --------------------------------------------------------------------------- phrases


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _upper_phrase(d: Description, rng: np.random.Generator, colour: bool) -> str:
    noun = {
        "sleeveless": ("sleeveless top", "tank top", "vest top"),
        "short": ("t-shirt", "short-sleeved shirt", "short-sleeved top"),
        "long": ("long-sleeved shirt", "long-sleeved top", "sweater"),
    }[d.sleeves]
    garment = _pick(rng, noun)
    c1 = f"{d.upper_color} " if colour else ""
    pattern = d.upper_pattern
    if pattern == "stripes":
        return _article(f"{c1}{_pick(rng, ('striped', 'stripy'))} {garment}")
    if pattern == "checks":
        return _article(f"{c1}{_pick(rng, ('checked', 'plaid', 'checkered'))} {garment}")
    if pattern == "logo":
        logo = f"a {d.upper_color2} logo" if colour else "a logo"
        return _article(f"{c1}{garment} with {logo} on the front")
    if pattern == "two_tone":
        tones = f"{d.upper_color} and {d.upper_color2} " if colour else ""
        return _article(f"{tones}two-tone {garment}")
    plain = _pick(rng, ("plain ", "", "")) if not colour else _pick(rng, ("plain ", ""))
    return _article(f"{c1}{plain}{garment}".replace("  ", " "))


def _lower_phrase(d: Description, rng: np.random.Generator, colour: bool) -> str:
    if d.lower_kind == "skirt":
        noun = _pick(rng, ("long skirt",) if d.lower_long else ("short skirt", "knee-length skirt"))
    elif d.lower_kind == "shorts":
        noun = "shorts"
    else:
        noun = _pick(rng, ("trousers", "pants", "long trousers"))
    c1 = f"{d.lower_color} " if colour else ""
    words = {
        "stripes": _pick(rng, ("striped ",)),
        "checks": _pick(rng, ("checked ", "plaid ")),
        "two_tone": "two-tone ",
    }.get(d.lower_pattern, "")
    if d.lower_pattern == "two_tone" and colour:
        c1 = f"{d.lower_color} and {d.lower_color2} "
    phrase = f"{c1}{words}{noun}"
    return _article(phrase) if d.lower_kind == "skirt" else phrase


def _hair_phrase(d: Description, rng: np.random.Generator, colour: bool) -> str:
    length = {"short": "short", "medium": _pick(rng, ("medium-length", "shoulder-length")),
              "long": "long"}[d.hair_length]
    hair = f"{length} {d.hair_color} hair" if colour else f"{length} hair"
    return f"with {hair}"


def _clauses(d: Description, rng: np.random.Generator, colour: bool) -> dict[str, str]:
    """Every clause that can describe ``d``, keyed by what it is about."""
    clauses = {
        "upper": _upper_phrase(d, rng, colour),
        "lower": _lower_phrase(d, rng, colour),
        "hair": _hair_phrase(d, rng, colour),
    }
    if d.backpack is not None:
        thing = f"{_article(d.backpack)} backpack" if colour else "a backpack"
        clauses["backpack"] = f"{_pick(rng, ('carrying', 'with'))} {thing}"
    if d.shoulder_bag is not None:
        noun = _pick(rng, ("shoulder bag", "bag over the shoulder", "handbag"))
        thing = f"{_article(d.shoulder_bag)} {noun}" if colour else _article(noun)
        clauses["bag"] = f"{_pick(rng, ('carrying', 'with'))} {thing}"
    if d.hat is not None:
        thing = f"{_article(d.hat)} {_pick(rng, ('hat', 'cap'))}" if colour else "a hat"
        clauses["hat"] = f"{_pick(rng, ('wearing', 'with'))} {thing}"
    if d.glasses:
        clauses["glasses"] = _pick(rng, ("wearing glasses", "with glasses"))
    return clauses


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(
    attrs: PersonAttributes,
    rng: np.random.Generator,
    view: str | None = None,
    *,
    colour_prob: float = 0.6,
    keep_prob: float = 0.75,
    max_tokens: int | None = 32,
) -> str:
    """One caption of an image of ``attrs`` (``view``: front / back / side, or None).

    ``colour_prob``: probability that the caption names colours at all (else no
    colour word appears). ``keep_prob``: probability that each detail clause is
    kept (the upper and lower garments with probability 0.9 and the view with 0.7;
    at least one clause is kept; 1 keeps everything). ``max_tokens``: clauses are dropped, in the drawn order,
    until the caption fits in this many tokens of open_clip's BPE tokenizer
    (start and end tokens included); None keeps them all.
    """
    if view is not None and view not in VIEW_PHRASES:
        raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEW_PHRASES)}")
    d = describe(attrs)
    colour = bool(rng.random() < colour_prob)
    clauses = _clauses(d, rng, colour)
    everything = keep_prob >= 1.0
    kept = [
        key for key in clauses
        if everything or rng.random() < (0.9 if key in ("upper", "lower") else keep_prob)
    ] or [_pick(rng, list(clauses))]
    order = [kept[i] for i in rng.permutation(len(kept))]
    subject = _pick(rng, ("person", "pedestrian", "person", "woman or man"))
    if d.build is not None and rng.random() < keep_prob:
        subject = f"{d.build} {subject}"
    subject = _article(subject)
    prefix = _pick(rng, ("a photo of ", "a picture of ", "an image of ", ""))
    view_text = None
    if view is not None and (everything or rng.random() < 0.7):
        view_text = _pick(rng, VIEW_PHRASES[view])
    use_in = bool(rng.random() < 0.3)

    def render(keys: list[str]) -> str:
        garments = [clauses[k] for k in keys if k in ("upper", "lower")]
        others = [clauses[k] for k in keys if k not in ("upper", "lower")]
        parts = []
        if garments:
            parts.append(("in " if use_in else "wearing ") + _join(garments))
        parts.extend(others)
        text = f"{prefix}{subject}"
        if parts:
            text += " " + ", ".join(parts)
        if view_text:
            text += f", {view_text}"
        return text + "."

    text = render(order)
    if max_tokens is not None:
        encode = _bpe_encoder()
        while len(order) > 1 and len(encode(text)) + 2 > max_tokens:
            order = order[:-1]
            text = render(order)
        if len(encode(text)) + 2 > max_tokens and view_text:
            view_text = None
            text = render(order)
    return text


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class AttributeQuery:
    """A zero-shot query: its text, whether it names a colour, and who it describes."""

    name: str
    text: str
    colour: bool
    matches: Callable[[Description], bool]


def _q(name: str, text: str, test: Callable[[Description], bool], colour: bool = False):
    return AttributeQuery(name, f"a photo of a person {text}.", colour, test)


ATTRIBUTE_QUERIES: tuple[AttributeQuery, ...] = (
    _q("skirt", "wearing a skirt", lambda d: d.lower_kind == "skirt"),
    _q("shorts", "wearing shorts", lambda d: d.lower_kind == "shorts"),
    _q("trousers", "wearing trousers", lambda d: d.lower_kind == "trousers"),
    _q("backpack", "carrying a backpack", lambda d: d.backpack is not None),
    _q("shoulder_bag", "carrying a shoulder bag", lambda d: d.shoulder_bag is not None),
    _q("hat", "wearing a hat", lambda d: d.hat is not None),
    _q("glasses", "wearing glasses", lambda d: d.glasses),
    _q("long_hair", "with long hair", lambda d: d.hair_length == "long"),
    _q("short_hair", "with short hair", lambda d: d.hair_length == "short"),
    _q("sleeveless", "wearing a sleeveless top", lambda d: d.sleeves == "sleeveless"),
    _q("long_sleeves", "wearing a long-sleeved shirt", lambda d: d.sleeves == "long"),
    _q("striped_top", "wearing a striped t-shirt", lambda d: d.upper_pattern == "stripes"),
    _q("checked_top", "wearing a checked shirt", lambda d: d.upper_pattern == "checks"),
    _q("two_tone_top", "wearing a two-tone top", lambda d: d.upper_pattern == "two_tone"),
    _q("logo_top", "wearing a top with a logo on the front", lambda d: d.upper_pattern == "logo"),
    _q("red_top", "wearing a red top", lambda d: d.upper_color == "red", colour=True),
    _q("blue_top", "wearing a blue top", lambda d: d.upper_color == "blue", colour=True),
    _q("green_top", "wearing a green top", lambda d: d.upper_color == "green", colour=True),
    _q("black_top", "wearing a black top", lambda d: d.upper_color == "black", colour=True),
    _q("white_top", "wearing a white top", lambda d: d.upper_color == "white", colour=True),
    _q("yellow_top", "wearing a yellow top", lambda d: d.upper_color == "yellow", colour=True),
    _q("black_trousers", "wearing black trousers",
       lambda d: d.lower_kind == "trousers" and d.lower_color == "black", colour=True),
    _q("blue_trousers", "wearing blue trousers",
       lambda d: d.lower_kind == "trousers" and d.lower_color == "blue", colour=True),
)
"""Attribute queries for zero-shot text-to-image retrieval (non-colour ones first)."""


@lru_cache(maxsize=1)
def _bpe_encoder():
    """open_clip's BPE encoder (the CLIP tokenizer, offline), to keep captions within a
    context length; the data layer reads it from open_clip directly, not from the models."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer().encode
