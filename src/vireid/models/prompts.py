"""Learnable text prompts (CoOp-style) for CLIP-based re-identification.

Each identity owns ``n_ctx`` learnable token embeddings placed in a text
template where the placeholder words ``X`` stand (CLIP-ReID, Li et al. AAAI
2023: "A photo of a X X X X person.", 4 tokens, normal init with std 0.02).
The prompts go through the frozen CLIP text encoder
(:meth:`vireid.models.clip.TextEncoder.encode_embeddings`), pooled at the
end-of-text token.

``num_sets`` independent sets of identity tokens are kept: 1 = shared by the
modalities (CLIP-ReID, LSMRL), 2 = one set per modality (CSDN: visible = 0,
infrared = 1). Each set may have its own template, e.g. LSMRL's
"A X X X X person observed in both day and night conditions." (docs/methods.md#lsmrl-lsmrl).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from vireid.models.clip import TextEncoder, get_tokenizer, value_checks_enabled

__all__ = ["DEFAULT_TEMPLATE", "PromptLearner", "TextEncoder"]

DEFAULT_TEMPLATE = "A photo of a X X X X person."
"""CLIP-ReID's template (docs/methods.md#clip-reid-baseline-clipreid); each X is one learned token."""

Tokenizer = Callable[[list[str]], torch.Tensor]


def _placeholder_id(tokenizer: Tokenizer, placeholder: str) -> int:
    ids = tokenizer([placeholder])[0].tolist()
    body = [i for i in ids[1:] if i != 0][:-1]  # drop SOT, padding and EOT
    if len(body) != 1:
        raise ValueError(f"the placeholder {placeholder!r} must be a single token, got {body}")
    return body[0]


class PromptLearner(nn.Module):
    """Identity-specific learnable prompts.

    ``forward(labels, set_index)`` returns the prompt token embeddings
    (B, L, D) and the end-of-text positions (B,), ready for
    ``text_encoder.encode_embeddings``. The template embeddings around the
    learned tokens are buffers computed from ``text_encoder.token_embedding``
    when the learner is built: build it after loading the CLIP weights, or call
    :meth:`refresh` afterwards. Only ``ctx`` (num_sets, C, n_ctx, D) trains.

    ``text_encoder``: the model's :class:`TextEncoder` (or the ClipModel, whose
    ``.text`` is used); it is not kept as a submodule. ``template``: one string,
    or one per set. ``num_sets``: defaults to the number of templates.
    """

    def __init__(
        self,
        text_encoder: TextEncoder | nn.Module,
        num_classes: int,
        template: str | Sequence[str] = DEFAULT_TEMPLATE,
        num_sets: int | None = None,
        *,
        placeholder: str = "X",
        init_std: float = 0.02,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(text_encoder, TextEncoder):
            inner = getattr(text_encoder, "text", None)  # a ClipModel
            if not isinstance(inner, TextEncoder):
                raise TypeError(
                    f"expected a TextEncoder or a ClipModel, got {type(text_encoder).__name__}"
                )
            text_encoder = inner
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        templates = [template] if isinstance(template, str) else list(template)
        if num_sets is None:
            num_sets = len(templates)
        if num_sets <= 0:
            raise ValueError(f"num_sets must be positive, got {num_sets}")
        if len(templates) == 1:
            templates = templates * num_sets
        if len(templates) != num_sets:
            raise ValueError(f"got {len(templates)} templates for num_sets={num_sets}")
        self.tokenizer = tokenizer or get_tokenizer(text_encoder.context_length)
        self.templates = templates
        self.placeholder = placeholder
        self.num_classes = num_classes
        self.num_sets = num_sets

        marker = _placeholder_id(self.tokenizer, placeholder)
        token_ids = self.tokenizer(templates).long()
        starts, counts = [], []
        for row, text in zip(token_ids.tolist(), templates):
            where = [i for i, t in enumerate(row) if t == marker]
            if not where:
                raise ValueError(f"template {text!r} has no placeholder {placeholder!r}")
            if where != list(range(where[0], where[0] + len(where))):
                raise ValueError(f"the placeholders of template {text!r} must be consecutive")
            starts.append(where[0])
            counts.append(len(where))
        if len(set(counts)) != 1:
            raise ValueError(f"every template needs the same number of placeholders, got {counts}")
        self.n_ctx = counts[0]
        width = text_encoder.width

        self.register_buffer("token_ids", token_ids)
        self.register_buffer("ctx_start", torch.tensor(starts, dtype=torch.long))
        self.register_buffer("eot_position", token_ids.argmax(dim=-1))
        # The text transformer is causal: tokens after the last end-of-text token
        # cannot change any pooled feature, so prompts stop there.
        self.length = int(self.eot_position.max()) + 1
        self.register_buffer(
            "template_embeddings",
            torch.zeros(
                num_sets, token_ids.shape[1], width, dtype=text_encoder.positional_embedding.dtype
            ),
        )
        self.refresh(text_encoder)
        self.ctx = nn.Parameter(torch.empty(num_sets, num_classes, self.n_ctx, width))
        nn.init.normal_(self.ctx, std=init_std)

    @torch.no_grad()
    def refresh(self, text_encoder: TextEncoder) -> None:
        """Recompute the frozen template embeddings from the text encoder's token table."""
        table = text_encoder.token_embedding
        self.template_embeddings.copy_(table(self.token_ids.to(table.weight.device)).detach())

    def forward(
        self, labels: torch.Tensor, set_index: int | torch.Tensor = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity labels (B,) and set index (int or (B,)) -> (embeddings (B, L, D), eot (B,)).

        L is the last end-of-text position + 1 (not the context length): the
        causal text encoder gives the same features as on the padded prompt,
        at a fraction of the cost (16 of 77 tokens for "A photo of a X X X X person.").
        """
        labels = torch.as_tensor(labels, device=self.ctx.device).long().reshape(-1)
        batch = labels.shape[0]
        if (
            value_checks_enabled()
            and batch
            and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes)
        ):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got {labels.tolist()[:8]}"
            )
        sets = torch.as_tensor(set_index, device=self.ctx.device).long().reshape(-1)
        if sets.numel() == 1:
            sets = sets.expand(batch)
        if sets.shape[0] != batch:
            raise ValueError(f"got {sets.shape[0]} set indices for {batch} labels")
        if (
            value_checks_enabled()
            and batch
            and (int(sets.min()) < 0 or int(sets.max()) >= self.num_sets)
        ):
            raise ValueError(f"set_index must lie in [0, {self.num_sets}), got {sets.tolist()[:8]}")
        learned = self.ctx[sets, labels]  # (B, n_ctx, D)
        base = self.template_embeddings[sets, : self.length].to(learned.dtype)  # (B, L, D)
        positions = self.ctx_start[sets].unsqueeze(1) + torch.arange(
            self.n_ctx, device=learned.device
        )
        index = positions.unsqueeze(-1).expand(-1, -1, base.shape[-1])
        embeddings = base.scatter(1, index, learned)
        return embeddings, self.eot_position[sets]

    def text_features(
        self,
        text_encoder: TextEncoder,
        labels: torch.Tensor | None = None,
        set_index: int | torch.Tensor = 0,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """Text features (B, d) of ``labels``, or (C, d) of every identity when None,
        computed in chunks of ``batch_size`` (gradients follow the caller's mode)."""
        if labels is None:
            labels = torch.arange(self.num_classes, device=self.ctx.device)
        labels = torch.as_tensor(labels, device=self.ctx.device).long().reshape(-1)
        sets = torch.as_tensor(set_index, device=self.ctx.device).long().reshape(-1)
        if sets.numel() == 1:
            sets = sets.expand(labels.shape[0])
        chunks = []
        for start in range(0, labels.shape[0], batch_size):
            stop = start + batch_size
            embeddings, eot = self(labels[start:stop], sets[start:stop])
            chunks.append(text_encoder.encode_embeddings(embeddings, eot))
        if not chunks:
            return torch.empty(0, text_encoder.embed_dim, device=self.ctx.device)
        return torch.cat(chunks)
