"""Populations of synthetic people for pretraining and zero-shot tests, in memory.

The pretraining population draws its identities from the stream
:data:`~vireid.data.synthetic.people.TAG_CLIP_PRETRAIN` and the held-out one from
:data:`~vireid.data.synthetic.people.TAG_CLIP_HELDOUT`; every dataset layout uses
``TAG_IDENTITY``, so both are disjoint from every benchmark population whatever the
seeds. Each image has its own camera profile, pose and look, drawn from a generator
seeded by (seed, stream, identity, modality, index); images are rendered at the
generator's 128x64 and resized (bicubic, antialiased) to the model's input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from vireid.data.synthetic.people import (
    PersonAttributes,
    make_rng,
    sample_attributes,
    sample_camera,
    sample_pose,
)
from vireid.data.synthetic.render import render_person
from vireid.data.transforms import Resize
from vireid.data.types import Modality

RENDER_SIZE: tuple[int, int] = (128, 64)
"""(H, W) the people are drawn at (the generator's default image size)."""


@dataclass
class Population:
    """Rendered images of ``len(attrs)`` identities, ``images_per_id`` each.

    ``images[modality]``: (N * K, 3, H, W) uint8, identity-major (image ``i`` shows
    identity ``i // K``); ``views[modality]``: the view of each image.
    """

    attrs: list[PersonAttributes]
    images_per_id: int
    images: dict[str, torch.Tensor]
    views: dict[str, list[str]]

    @property
    def labels(self) -> torch.Tensor:
        return torch.arange(len(self.attrs)).repeat_interleave(self.images_per_id)


def render_population(
    *,
    seed: int,
    stream: int,
    num_ids: int,
    images_per_id: int,
    image_size: tuple[int, int],
    modalities: tuple[str, ...] = ("visible",),
    progress: bool = False,
) -> Population:
    """Render a population (see the module docstring)."""
    if num_ids < 1 or images_per_id < 1:
        raise ValueError(f"need at least one identity and one image each, got "
                         f"num_ids={num_ids}, images_per_id={images_per_id}")
    attrs = [sample_attributes(seed, pid, stream=stream) for pid in range(num_ids)]
    resize = Resize(tuple(image_size), "bicubic")
    images, views = {}, {}
    for name in modalities:
        modality = Modality.parse(name)
        out = torch.empty(num_ids * images_per_id, 3, *image_size, dtype=torch.uint8)
        seen: list[str] = []
        jobs = tqdm(range(num_ids), desc=f"rendering {modality.name.lower()}", unit="id",
                    disable=not progress, mininterval=5.0)
        for pid in jobs:
            for index in range(images_per_id):
                rng = make_rng(seed, stream, pid, 1 + int(modality), index)
                camera = sample_camera(rng)
                pose = sample_pose(rng, camera)
                img = render_person(attrs[pid], modality, pose, camera=camera, rng=rng,
                                    image_size=RENDER_SIZE)
                frame = torch.from_numpy(img).permute(2, 0, 1).contiguous()
                out[pid * images_per_id + index] = resize(frame)
                seen.append(pose.view)
        images[modality.name.lower()] = out
        views[modality.name.lower()] = seen
    return Population(attrs=attrs, images_per_id=images_per_id, images=images, views=views)


_CLIP_MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
_CLIP_STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, CLIP's pre-processing (open_clip OPENAI_DATASET_MEAN/STD)."""
    return (images.float() / 255.0 - _CLIP_MEAN) / _CLIP_STD
