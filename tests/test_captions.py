"""Captions and attribute queries of synthetic people (vireid.data.synthetic.captions)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from vireid.data.synthetic.captions import (
    ATTRIBUTE_QUERIES,
    caption,
    color_name,
    describe,
    hair_color_name,
)
from vireid.data.synthetic.people import (
    TAG_CLIP_HELDOUT,
    TAG_CLIP_PRETRAIN,
    make_rng,
    sample_attributes,
)
from vireid.models.clip import get_tokenizer

COLOUR_WORDS = {"red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "black",
                "white", "grey", "brown", "blond"}

PEOPLE = [sample_attributes(0, pid, stream=TAG_CLIP_PRETRAIN) for pid in range(200)]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.mark.parametrize(("rgb", "name"), [
    ((1.0, 0.0, 0.0), "red"), ((0.0, 0.0, 1.0), "blue"), ((0.1, 0.8, 0.2), "green"),
    ((1.0, 0.9, 0.1), "yellow"), ((0.5, 0.1, 0.6), "purple"), ((0.6, 0.3, 0.05), "orange"),
    ((0.35, 0.2, 0.05), "brown"), ((0.1, 0.1, 0.35), "dark blue"),
    ((0.12, 0.12, 0.12), "black"), ((0.35, 0.35, 0.35), "dark grey"),
    ((0.6, 0.6, 0.6), "grey"), ((0.9, 0.9, 0.9), "white"),
])
def test_color_names(rgb, name):
    assert color_name(rgb) == name


def test_hair_colours_are_the_generators_four_tones():
    names = {hair_color_name(a.hair_color) for a in PEOPLE}
    assert names == {"black", "dark brown", "brown", "blond"}


def test_captions_are_deterministic_and_vary_with_the_seed():
    person = PEOPLE[3]
    first = [caption(person, make_rng(5, k), "front") for k in range(8)]
    again = [caption(person, make_rng(5, k), "front") for k in range(8)]
    assert first == again
    assert len(set(first)) >= 4  # several phrasings of one identity


def test_full_caption_names_every_attribute():
    person = next(a for a in PEOPLE if a.lower_kind == "skirt" and a.backpack is not None)
    d = describe(person)
    text = caption(person, make_rng(0), "back", colour_prob=1.0, keep_prob=1.0, max_tokens=None)
    assert "skirt" in text and "backpack" in text
    assert d.upper_color in text and d.hair_color in text
    assert {"short": "short", "medium": "length", "long": "long"}[d.hair_length] in text
    assert any(v in text for v in ("behind", "back", "away"))


def test_colourless_captions_have_no_colour_word():
    for k, person in enumerate(PEOPLE[:60]):
        text = caption(person, make_rng(1, k), "side", colour_prob=0.0)
        assert not words(text) & COLOUR_WORDS, text


def test_shape_words_outnumber_colour_words():
    colour = shape = 0
    for k, person in enumerate(PEOPLE):
        found = words(caption(person, make_rng(2, k), "front"))
        colour += bool(found & COLOUR_WORDS)
        shape += bool(found & {"skirt", "shorts", "trousers", "pants", "backpack", "hair",
                               "striped", "stripy", "checked", "plaid", "checkered", "logo",
                               "sleeveless", "hat", "cap", "glasses", "bag", "handbag"})
    assert shape > colour > 0.3 * len(PEOPLE)


def test_captions_fit_the_context():
    encode = get_tokenizer().encode
    for k, person in enumerate(PEOPLE):
        text = caption(person, make_rng(3, k), "front", colour_prob=1.0, keep_prob=1.0)
        assert len(encode(text)) + 2 <= 32, text


def test_unknown_view_is_an_error():
    with pytest.raises(ValueError, match="unknown view 'top'"):
        caption(PEOPLE[0], make_rng(0), "top")


def test_queries_describe_some_but_not_all_people():
    descriptions = [describe(a) for a in PEOPLE]
    for query in ATTRIBUTE_QUERIES:
        share = sum(query.matches(d) for d in descriptions) / len(descriptions)
        assert 0.02 < share < 0.9, (query.name, share)
        assert query.text.startswith("a photo of a person")
        assert bool(words(query.text) & COLOUR_WORDS) == query.colour, query.name


def test_query_predicates_follow_the_attributes():
    person = PEOPLE[0]
    skirt = replace(person, lower_kind="skirt", backpack=None, glasses=True)
    by_name = {q.name: q for q in ATTRIBUTE_QUERIES}
    d = describe(skirt)
    assert by_name["skirt"].matches(d) and not by_name["trousers"].matches(d)
    assert by_name["glasses"].matches(d) and not by_name["backpack"].matches(d)


def test_clip_populations_are_their_own_streams():
    for pid in range(5):
        bench = sample_attributes(0, pid)
        assert sample_attributes(0, pid, stream=TAG_CLIP_PRETRAIN) != bench
        assert sample_attributes(0, pid, stream=TAG_CLIP_HELDOUT) != bench
        assert sample_attributes(0, pid, stream=TAG_CLIP_HELDOUT) != sample_attributes(
            0, pid, stream=TAG_CLIP_PRETRAIN)
