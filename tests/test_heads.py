"""BN-neck, classifier and GeM pooling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vireid.models import BNNeck, Classifier, GeM


def test_bnneck_bias_frozen_and_normalises():
    neck = BNNeck(16)
    assert torch.equal(neck.weight, torch.ones(16)) and torch.equal(neck.bias, torch.zeros(16))
    assert not neck.bias.requires_grad and neck.weight.requires_grad
    torch.manual_seed(0)
    x = torch.randn(64, 16) * 3 + 5
    y = neck(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)
    y.pow(3).sum().backward()
    assert neck.bias.grad is None and neck.weight.grad is not None


def test_classifier_init():
    torch.manual_seed(0)
    head = Classifier(256, 400)
    assert head.bias is None and head.weight.shape == (400, 256)
    assert abs(float(head.weight.detach().std()) - 0.001) < 0.0001
    assert abs(float(head.weight.detach().mean())) < 0.0001
    with_bias = Classifier(8, 3, bias=True)
    assert torch.equal(with_bias.bias, torch.zeros(3))


def test_gem_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(GeM(p=2.0)(x), torch.tensor([[math.sqrt(7.5)]]))
    torch.testing.assert_close(GeM(p=1.0)(x), torch.tensor([[2.5]]))
    torch.manual_seed(0)
    maps = torch.rand(2, 5, 4, 3)
    torch.testing.assert_close(GeM(p=1.0)(maps), F.adaptive_avg_pool2d(maps, 1).flatten(1))
    big = GeM(p=60.0, learnable=False)(maps)
    torch.testing.assert_close(big, maps.amax(dim=(2, 3)), atol=0.05, rtol=0)
    # negatives are clamped to eps before the power
    assert float(GeM(eps=1e-6)(-torch.ones(1, 1, 2, 2)).detach()) == pytest.approx(1e-6, rel=1e-3)


def test_gem_p_learnable_or_fixed():
    gem = GeM()
    assert [n for n, _ in gem.named_parameters()] == ["p"] and float(gem.p.detach()) == 3.0
    gem(torch.rand(2, 3, 4, 4) + 0.1).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs() > 0
    fixed = GeM(learnable=False)
    assert list(fixed.parameters()) == [] and "p" in dict(fixed.named_buffers())
    with pytest.raises(ValueError, match="positive"):
        GeM(p=0.0)
    with pytest.raises(ValueError, match="B, C, H, W"):
        gem(torch.rand(2, 3))
