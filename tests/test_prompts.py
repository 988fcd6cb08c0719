"""Text encoder on token embeddings (parity with open_clip) and the prompt learner."""

from __future__ import annotations

import pytest
import torch
from open_clip.model import CLIP

from vireid.models import DEFAULT_TEMPLATE, PromptLearner, build_clip, get_tokenizer
from vireid.models.clip import TextEncoder
from vireid.models.factory import backbone_config
from vireid.models.weights import to_model_keys

SENTENCES = ["a photo of a person.", "A X X X X person observed in both day and night conditions."]


def _open_clip_model(vision_name: str, text_name: str) -> CLIP:
    vision, text = backbone_config(vision_name), backbone_config(text_name)
    return CLIP(text["embed_dim"], vision["vision_cfg"], text["text_cfg"], quick_gelu=True).eval()


def _text_state(reference: CLIP) -> dict[str, torch.Tensor]:
    state = to_model_keys(reference.state_dict())
    return {k[len("text.") :]: v for k, v in state.items() if k.startswith("text.")}


@pytest.mark.parametrize("text_name", ["tiny-vit", "ViT-B-16"])
def test_text_encoder_matches_open_clip_encode_text(text_name):
    """Fed the real token embeddings, the prompt path equals ``encode_text`` (docs/methods.md#clip-reid-baseline-clipreid)."""
    torch.manual_seed(0)
    reference = _open_clip_model("tiny-vit", text_name)  # real-size text tower for ViT-B-16
    cfg = backbone_config(text_name)
    text_cfg = cfg["text_cfg"]
    from open_clip.transformer import QuickGELU

    ours = TextEncoder(
        context_length=text_cfg["context_length"],
        vocab_size=text_cfg["vocab_size"],
        width=text_cfg["width"],
        heads=text_cfg["heads"],
        layers=text_cfg["layers"],
        mlp_ratio=4.0,
        embed_dim=cfg["embed_dim"],
        act_layer=QuickGELU,
    ).eval()
    ours.load_state_dict(_text_state(reference))
    tokens = get_tokenizer()(SENTENCES)
    with torch.no_grad():
        expected = reference.encode_text(tokens)
        by_tokens = ours.encode(tokens)
        by_embeddings = ours.encode_embeddings(ours.token_embedding(tokens), tokens.argmax(-1))
    assert expected.shape == (2, cfg["embed_dim"])
    torch.testing.assert_close(by_tokens, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(by_embeddings, expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_clip("tiny-vit", (64, 32)).eval()


def test_prompt_learner_layout(tiny_model):
    text = tiny_model.text
    learner = PromptLearner(text, 5)
    ids = get_tokenizer()([DEFAULT_TEMPLATE])[0]
    assert learner.n_ctx == 4 and learner.ctx.shape == (1, 5, 4, text.width)
    assert int(learner.ctx_start[0]) == 5  # SOT "a photo of a" then the four X
    labels = torch.tensor([3, 0, 3])
    embeddings, eot = learner(labels)
    end = int(ids.argmax())
    assert embeddings.shape == (3, end + 1, text.width)  # stops at the end-of-text token
    assert eot.tolist() == [end] * 3
    template = text.token_embedding(ids).detach()[: end + 1]
    keep = torch.ones(end + 1, dtype=torch.bool)
    keep[5:9] = False
    torch.testing.assert_close(embeddings[:, keep], template[keep].expand(3, -1, -1))
    torch.testing.assert_close(embeddings[:, 5:9], learner.ctx[0, labels])


def test_trimmed_prompts_encode_like_the_padded_ones(tiny_model):
    """The causal text encoder pools at EOT: the padding after it changes nothing."""
    text = tiny_model.text
    torch.manual_seed(3)
    lsmrl = "A X X X X person observed in both day and night conditions."
    learner = PromptLearner(text, 3, template=[DEFAULT_TEMPLATE, lsmrl])
    labels, sets = torch.tensor([0, 2, 1]), torch.tensor([0, 1, 1])
    embeddings, eot = learner(labels, sets)
    assert embeddings.shape[1] == learner.length == 16 < text.context_length
    full = learner.template_embeddings[sets].clone()
    full[:, : learner.length] = embeddings.detach()
    with torch.no_grad():
        trimmed = text.encode_embeddings(embeddings, eot)
        padded = text.encode_embeddings(full, eot)
    torch.testing.assert_close(trimmed, padded, atol=1e-5, rtol=1e-5)


def test_placeholder_embeddings_reproduce_the_template_text(tiny_model):
    """With every learned token set to the embedding of "x", the prompt features
    equal the encoding of the template text itself (independent computation)."""
    text = tiny_model.text
    learner = PromptLearner(text, 3)
    x_id = int(get_tokenizer()(["X"])[0, 1])
    with torch.no_grad():
        learner.ctx.copy_(text.token_embedding.weight[x_id].expand_as(learner.ctx))
        features = learner.text_features(text)
        expected = text.encode(get_tokenizer()([DEFAULT_TEMPLATE]))
    assert features.shape == (3, text.embed_dim)
    torch.testing.assert_close(features, expected.expand(3, -1), atol=1e-5, rtol=1e-5)


def test_shared_and_per_modality_sets(tiny_model):
    text = tiny_model.text
    torch.manual_seed(1)
    shared = PromptLearner(tiny_model, 4, num_sets=1)  # a ClipModel works too
    paired = PromptLearner(text, 4, num_sets=2)
    assert shared.ctx.shape[0] == 1 and paired.ctx.shape[0] == 2
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad():
        visible = paired.text_features(text, labels, set_index=0)
        infrared = paired.text_features(text, labels, set_index=1)
        mixed = paired.text_features(text, labels, set_index=torch.tensor([0, 1, 0]))
    assert not torch.allclose(visible, infrared)
    torch.testing.assert_close(mixed[0], visible[0])
    torch.testing.assert_close(mixed[1], infrared[1])
    with pytest.raises(ValueError, match="set_index"):
        paired(labels, set_index=2)
    with pytest.raises(ValueError, match="labels"):
        paired(torch.tensor([4]))


def test_per_set_templates(tiny_model):
    text = tiny_model.text
    lsmrl = "A X X X X person observed in both day and night conditions."
    learner = PromptLearner(text, 2, template=[DEFAULT_TEMPLATE, lsmrl])
    assert learner.num_sets == 2 and learner.ctx_start.tolist() == [5, 2]
    _, eot = learner(torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert eot.tolist() == [11, 15]
    with pytest.raises(ValueError, match="placeholder"):
        PromptLearner(text, 2, template="a photo of a person.")
    with pytest.raises(ValueError, match="consecutive"):
        PromptLearner(text, 2, template="a X photo of a X person.")
    with pytest.raises(ValueError, match="same number"):
        PromptLearner(text, 2, template=[DEFAULT_TEMPLATE, "a X X person."])


def test_only_ctx_trains_and_gradients_reach_the_batch_identities(tiny_model):
    text = tiny_model.text
    torch.manual_seed(2)
    learner = PromptLearner(text, 6, num_sets=2)
    assert [name for name, p in learner.named_parameters() if p.requires_grad] == ["ctx"]
    assert {"template_embeddings", "token_ids", "ctx_start", "eot_position"} <= set(
        name for name, _ in learner.named_buffers()
    )
    labels, sets = torch.tensor([1, 4, 4]), torch.tensor([0, 1, 0])
    embeddings, eot = learner(labels, sets)
    text.encode_embeddings(embeddings, eot).pow(2).sum().backward()
    touched = learner.ctx.grad.abs().sum(dim=(2, 3)) > 0  # (sets, classes)
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[0, 1] = expected[1, 4] = expected[0, 4] = True
    assert torch.equal(touched, expected)
    assert learner.template_embeddings.grad is None
    text.zero_grad(set_to_none=True)


def test_refresh_follows_new_token_table(tiny_model):
    text = build_clip("tiny-vit", (64, 32)).text
    learner = PromptLearner(text, 2)
    with torch.no_grad():
        text.token_embedding.weight.add_(1.0)
    before = learner.template_embeddings.clone()
    learner.refresh(text)
    torch.testing.assert_close(learner.template_embeddings, before + 1.0)


def test_bad_arguments_are_named(tiny_model):
    with pytest.raises(TypeError, match="TextEncoder or a ClipModel"):
        PromptLearner(tiny_model.visual, 3)
    with pytest.raises(ValueError, match="num_classes"):
        PromptLearner(tiny_model, 0)
