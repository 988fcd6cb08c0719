"""A CLIP of our own: contrastive pretraining on captioned synthetic people.

Real CLIP weights cannot be downloaded everywhere, so this package makes small CLIPs
the way CLIP was made (Radford et al., 2021): image-text contrastive learning on
captioned *visible* images, here of synthetic people whose attributes are known
(:mod:`vireid.data.synthetic.captions`). Methods then start, as on real data, from a
CLIP that knows "striped", "skirt" or "backpack" and must bridge to infrared
themselves (docs/synthetic_clip.md).

- :mod:`vireid.models.synthetic` -- the shipped architectures, their weight files and
  the ``pretrained="synthetic"`` tag (in the model layer, which this app builds on);
- :mod:`.data` -- the pretraining and held-out populations, rendered in memory;
- :mod:`.train` -- :class:`Recipe` and :func:`pretrain` (symmetric InfoNCE, AdamW,
  warm-up + cosine, resumable);
- :mod:`.zeroshot` -- :func:`zeroshot`: attribute and caption retrieval, visible and
  infrared, beside chance.
"""

from vireid.models.synthetic import SHIPPED, SYNTHETIC_TAG, shipped_weights

__all__ = ["SHIPPED", "SYNTHETIC_TAG", "Recipe", "pretrain", "shipped_weights", "write_weights",
           "zeroshot"]

_LAZY = {"Recipe": "train", "pretrain": "train", "write_weights": "train", "zeroshot": "zeroshot"}


def __getattr__(name: str):
    # Lazy: the training code (torch, the renderer) loads on use.
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
