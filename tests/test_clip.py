"""CLIP backbone adapter: shapes, pieces, strides, grid resizing, camera embedding, freezing."""

from __future__ import annotations

import pytest
import torch

from vireid.models import build_clip, list_backbones, resize_grid_embedding
from vireid.models.clip import VisualOutput, resnet_grid


def _images(batch: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_list_backbones_has_the_documented_ones():
    assert {"ViT-B-16", "RN50", "tiny-vit", "tiny-vit-p8", "tiny-rn50"} <= set(list_backbones())
    assert build_clip("tiny-vit-p8", (128, 64)).visual.grid_size == (16, 8)


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="nope-42"):
        build_clip("nope-42")


@pytest.mark.parametrize("size", [(288, 144), (64, 32)])
def test_tiny_vit_output_fields(size):
    torch.manual_seed(0)
    model = build_clip("tiny-vit", size).eval()
    visual = model.visual
    gh, gw = size[0] // 16, size[1] // 16
    assert visual.kind == "vit" and visual.grid_size == (gh, gw)
    out = visual(_images(2, size))
    assert isinstance(out, VisualOutput)
    width, dim = visual.width, visual.embed_dim
    assert out.cls.shape == (2, width) and out.proj.shape == (2, dim)
    assert out.tokens.shape == (2, 1 + gh * gw, width)
    assert out.feature_map.shape == (2, width, gh, gw)
    assert out.layers is None
    # Fields agree with each other: cls is token 0, proj = cls @ proj, the map holds the patches
    torch.testing.assert_close(out.cls, out.tokens[:, 0])
    torch.testing.assert_close(out.proj, out.cls @ visual.proj)
    torch.testing.assert_close(out.feature_map[:, :, 1, 0], out.tokens[:, 1 + gw])


@pytest.mark.parametrize("size", [(288, 144), (64, 32)])
def test_tiny_rn50_output_fields(size):
    torch.manual_seed(0)
    model = build_clip("tiny-rn50", size).eval()
    visual = model.visual
    out = visual(_images(2, size))
    h, w = size[0] // 16, size[1] // 16  # stride 16 with last_stride=1
    assert visual.kind == "resnet" and visual.grid_size == (h, w)
    assert out.feature_map.shape == (2, visual.width, h, w)
    assert out.cls.shape == (2, visual.width) and out.proj.shape == (2, visual.embed_dim)
    assert out.tokens is None
    torch.testing.assert_close(out.cls, out.feature_map.mean(dim=(2, 3)))
    torch.testing.assert_close(out.proj, visual.attnpool(out.feature_map))


def test_vit_pieces_reproduce_forward_and_return_layers():
    torch.manual_seed(1)
    visual = build_clip("tiny-vit", (64, 32)).eval().visual
    x = _images(3, (64, 32))
    out = visual(x, return_layers=[-1, 0])
    tokens = visual.embed(x)
    per_layer = []
    for block in visual.blocks:
        tokens = block(tokens)
        per_layer.append(tokens)
    cls, proj = visual.head(tokens)
    torch.testing.assert_close(cls, out.cls)
    torch.testing.assert_close(proj, out.proj)
    assert len(out.layers) == 2
    torch.testing.assert_close(out.layers[0], per_layer[-1])
    torch.testing.assert_close(out.layers[1], per_layer[0])
    with pytest.raises(ValueError, match="out of range"):
        visual(x, return_layers=[5])


def test_resnet_pieces_reproduce_forward():
    torch.manual_seed(2)
    visual = build_clip("tiny-rn50", (64, 32)).eval().visual
    x = _images(2, (64, 32))
    out = visual(x, return_layers=[0, 3])
    h = visual.stem(x)
    for layer in visual.layers:
        h = layer(h)
    torch.testing.assert_close(h, out.feature_map)
    torch.testing.assert_close(out.layers[1], out.feature_map)
    assert out.layers[0].shape[-2:] == (16, 8)  # layer1 works at stride 4


def test_last_stride_one_doubles_the_map():
    torch.manual_seed(0)
    size = (128, 64)
    one = build_clip("tiny-rn50", size, last_stride=1).eval().visual
    two = build_clip("tiny-rn50", size, last_stride=2).eval().visual
    map_one = one(_images(1, size)).feature_map
    map_two = two(_images(1, size)).feature_map
    assert map_one.shape[-2:] == (8, 4) and map_two.shape[-2:] == (4, 2)
    # the anti-aliasing pools of layer4's first block are gone (main path and downsample)
    first = one.layer4[0]
    assert isinstance(first.avgpool, torch.nn.Identity)
    assert isinstance(getattr(first.downsample, "-1"), torch.nn.Identity)
    assert isinstance(getattr(two.layer4[0].downsample, "-1"), torch.nn.AvgPool2d)
    # 288x144 with stride 2: pools floor 144/32 = 4.5 to 4
    assert resnet_grid((288, 144), 2) == (9, 4) and resnet_grid((288, 144), 1) == (18, 9)


def test_patch_stride_gives_overlapping_patches():
    visual = build_clip("tiny-vit", (64, 32), patch_stride=12).visual
    assert visual.grid_size == ((64 - 16) // 12 + 1, (32 - 16) // 12 + 1)
    out = visual(_images(1, (64, 32)))
    assert out.tokens.shape[1] == 1 + 5 * 2


def test_wrong_input_size_is_explained():
    visual = build_clip("tiny-vit", (64, 32)).visual
    with pytest.raises(ValueError, match="image_size"):
        visual(_images(1, (32, 32)))


def test_resize_grid_embedding_by_hand():
    # class token kept; a 2x2 grid whose value is its column index, bilinear
    # (align_corners=False) to 2x4: source x = (i + 0.5) / 2 - 0.5 clamped -> 0, .25, .75, 1
    grid = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).reshape(4, 1)
    embedding = torch.cat([torch.tensor([[7.0]]), grid])
    resized = resize_grid_embedding(embedding, (2, 4))
    assert resized[0, 0] == 7.0
    expected = torch.tensor([0.0, 0.25, 0.75, 1.0]).repeat(2)
    torch.testing.assert_close(resized[1:, 0], expected)


def test_resize_grid_embedding_same_grid_is_exact_and_constant_stays_constant():
    torch.manual_seed(0)
    embedding = torch.randn(1 + 14 * 14, 8)
    assert torch.equal(resize_grid_embedding(embedding, (14, 14)), embedding)
    constant = torch.cat([torch.randn(1, 8), torch.full((196, 8), 0.5)])
    resized = resize_grid_embedding(constant, (18, 9))
    assert resized.shape == (1 + 162, 8)
    assert torch.equal(resized[0], constant[0])
    torch.testing.assert_close(resized[1:], torch.full((162, 8), 0.5))
    # non-square source: 18x9 back to itself is inferred from the aspect ratio
    assert torch.equal(resize_grid_embedding(resized, (18, 9)), resized)


def test_camera_embedding_only_when_cameras_given_and_trains():
    torch.manual_seed(3)
    model = build_clip("tiny-vit", (64, 32), num_cameras=4, camera_scale=1.5).eval()
    visual = model.visual
    x = _images(2, (64, 32))
    cameras = torch.tensor([0, 2])
    plain = visual(x).proj
    with_cameras = visual(x, cameras).proj
    assert not torch.allclose(plain, with_cameras)
    with torch.no_grad():
        saved = visual.camera_embedding.clone()
        visual.camera_embedding.zero_()
    torch.testing.assert_close(visual(x, cameras).proj, plain)  # the only difference is the term
    with torch.no_grad():
        visual.camera_embedding.copy_(saved)
    # the term is camera_scale * embedding[camera], added to every token before ln_pre
    tokens = visual.conv1(x).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.view(1, 1, -1).expand(2, -1, -1)
    raw = torch.cat([cls, tokens], 1) + visual.positional_embedding
    raw = raw + 1.5 * saved[cameras].unsqueeze(1)
    torch.testing.assert_close(visual.embed(x, cameras), visual.ln_pre(raw))
    visual(x, cameras).proj.sum().backward()
    grad = visual.camera_embedding.grad
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0
    assert torch.equal(grad[1], torch.zeros_like(grad[1])) and torch.equal(grad[3], grad[1])


def test_camera_embedding_on_class_token_only():
    torch.manual_seed(4)
    visual = build_clip("tiny-vit", (64, 32), num_cameras=2, camera_tokens="cls").visual
    x = _images(2, (64, 32))
    plain, shifted = visual.embed(x), visual.embed(x, torch.tensor([1, 0]))
    assert torch.equal(plain[:, 1:], shifted[:, 1:])
    assert not torch.allclose(plain[:, 0], shifted[:, 0])


def test_camera_errors():
    visual = build_clip("tiny-vit", (64, 32), num_cameras=2).visual
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        visual(_images(1, (64, 32)), torch.tensor([2]))
    plain = build_clip("tiny-vit", (64, 32)).visual
    with pytest.raises(ValueError, match="num_cameras=0"):
        plain(_images(1, (64, 32)), torch.tensor([0]))
    with pytest.raises(ValueError, match="ViT"):
        build_clip("tiny-rn50", (64, 32), num_cameras=2)


def _frozen(model) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def test_frozen_parts_vit():
    model = build_clip("tiny-vit", (64, 32), num_cameras=2, frozen=["patch_embed", "text"])
    expected = {"visual.conv1.weight"} | {
        n for n, _ in model.named_parameters() if n.startswith("text.")
    }
    assert _frozen(model) == expected
    assert model.frozen_parameter_names() == expected
    assert "visual.camera_embedding" not in _frozen(model)
    other = build_clip(
        "tiny-vit", (64, 32), frozen=["visual.proj", "visual.transformer.resblocks.1"]
    )
    assert _frozen(other) == {"visual.proj"} | {
        n for n, _ in other.named_parameters() if n.startswith("visual.transformer.resblocks.1.")
    }


def test_frozen_parts_resnet_and_unknown_name():
    model = build_clip("tiny-rn50", (64, 32), frozen=["stem"])
    assert _frozen(model) == {
        n for n, _ in model.named_parameters() if n.startswith("visual.stem.")
    }
    assert len(_frozen(model)) == 9  # three conv weights + three norms (weight, bias)
    with pytest.raises(ValueError, match="patch_embed"):
        build_clip("tiny-rn50", (64, 32), frozen=["patch_embed"])
    with pytest.raises(ValueError, match="'bogus'"):
        build_clip("tiny-vit", (64, 32), frozen=["bogus"])


def test_model_is_float32_and_tokenizer_works_offline():
    model = build_clip("tiny-vit", (64, 32))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    ids = model.tokenize(["a photo of a person."])
    assert ids.shape == (1, 77) and ids[0, 0] == 49406 and int(ids.argmax()) == 7
    assert model.encode_text(ids).shape == (1, model.embed_dim)


def test_real_architectures_at_288x144():
    """ViT-B/16 and RN50 at full size, random weights (docs/methods.md#notation-and-shared-settings)."""
    torch.manual_seed(0)
    with torch.no_grad():
        vit = build_clip("ViT-B-16").eval()
        out = vit.visual(_images(1, (288, 144)))
        assert vit.visual.grid_size == (18, 9) and vit.visual.num_patches == 162
        assert out.tokens.shape == (1, 163, 768) and out.proj.shape == (1, 512)
        assert out.feature_map.shape == (1, 768, 18, 9)
        assert vit.text.width == 512 and vit.embed_dim == 512
        del vit
        rn = build_clip("RN50").eval()
        out = rn.visual(_images(1, (288, 144)))
        assert out.feature_map.shape == (1, 2048, 18, 9)
        assert out.cls.shape == (1, 2048) and out.proj.shape == (1, 1024)
        assert rn.visual.attnpool.positional_embedding.shape == (1 + 162, 2048)


def test_resnet_reports_no_cameras():
    assert build_clip("tiny-rn50", (64, 32)).visual.num_cameras == 0
    assert build_clip("tiny-vit", (64, 32), num_cameras=3).visual.num_cameras == 3
