"""Transforms, image decoding and the Dataset wrappers of the data pipeline."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from vireid.data.io import ImageReadError, error_summary, load_image, read_image_tensor
from vireid.data.loaders import ImageDataset, TrackletDataset, collate_samples
from vireid.data.transforms import (
    GRAY_WEIGHTS,
    NORMALIZATIONS,
    ChannelAdapGray,
    ChannelExchange,
    Compose,
    HorizontalFlip,
    Normalize,
    PadCrop,
    RandomErasing,
    Resize,
    build_transforms,
)
from vireid.data.transforms import (
    RECIPES as TRANSFORM_RECIPES,
)
from vireid.data.types import Modality, Sample

SIZE = (32, 16)
RECIPES = list(TRANSFORM_RECIPES)


def _image(seed=0, shape=(3, 40, 20)):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


# ---------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("train", [True, False])
def test_shape_and_dtype_for_image_and_clip(recipe, train):
    t = build_transforms(train, size=SIZE, recipe=recipe)
    out = t(_image(), random.Random(0))
    assert out.shape == (3, *SIZE) and out.dtype == torch.float32
    clip = [_image(s, (3, 40 + s, 20)) for s in range(4)]  # frames of different sizes
    out = t(clip, random.Random(0))
    assert out.shape == (4, 3, *SIZE) and out.dtype == torch.float32


def test_default_size_is_288_by_144():
    assert build_transforms(True)(_image(), random.Random(0)).shape == (3, 288, 144)


@pytest.mark.parametrize("recipe", RECIPES)
def test_deterministic_for_a_seed(recipe):
    t = build_transforms(True, size=SIZE, recipe=recipe)
    x = _image()
    assert torch.equal(t(x, random.Random(5)), t(x, random.Random(5)))
    outs = [t(x, random.Random(s)) for s in range(8)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert torch.equal(x, _image())  # input untouched


@pytest.mark.parametrize("channel", [None, "exchange", "adaptive_gray"])
def test_clip_frames_share_crop_flip_erase_and_channel_choice(channel):
    t = build_transforms(True, size=SIZE, recipe="csdn", channel=channel)
    frames = [_image(s, (3, *SIZE)) for s in range(5)]
    clip = torch.stack(frames)
    for seed in range(20):
        out = t(clip, random.Random(seed))
        for k, frame in enumerate(frames):
            # a clip transform = the same transform applied to each frame with the same draws
            assert torch.equal(out[k], t(frame, random.Random(seed)))


def test_video_recipe_same_geometry_and_erased_box_on_all_frames():
    t = build_transforms(True, size=SIZE, recipe="clipreid", erase_p=1.0)
    frame = _image(1, (3, *SIZE))
    clip = frame.expand(4, -1, -1, -1).contiguous()
    out = t(clip, random.Random(3))
    erased = out[0] != out[1]  # per-pixel noise differs between frames only inside the box
    rows, cols = erased.any(0).any(1).nonzero(), erased.any(0).any(0).nonzero()
    assert erased.any()
    box = torch.zeros_like(erased[0])
    box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    assert torch.equal(erased.any(0), box)  # a single rectangle
    assert torch.equal(out[2][:, ~box], out[0][:, ~box])


def test_per_frame_mode_draws_independent_parameters():
    t = build_transforms(True, size=SIZE, recipe="csdn", per_frame=True)
    clip = _image(2, (3, *SIZE)).expand(6, -1, -1, -1).contiguous()
    out = t(clip, random.Random(0))
    assert any(not torch.equal(out[0], out[k]) for k in range(1, 6))


def test_padcrop_equals_explicit_pad_then_crop():
    x = _image(3, (3, *SIZE))
    for seed in range(30):
        rng = random.Random(seed)
        top, left = rng.randint(0, 20), rng.randint(0, 20)
        expected = F.pad(x, (10, 10, 10, 10))[:, top:top + SIZE[0], left:left + SIZE[1]]
        assert torch.equal(PadCrop(SIZE, 10)(x, random.Random(seed)), expected)


def test_flip_and_normalize_values():
    x = _image(4, (3, 4, 5))
    assert torch.equal(HorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(HorizontalFlip(0.0)(x), x)
    mean, std = NORMALIZATIONS["clip"]
    expected = (x.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(Normalize("clip")(x), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(Normalize("clip")(x.float() / 255), expected, atol=1e-5, rtol=0)


def test_clip_constants_are_open_clips():
    constants = pytest.importorskip("open_clip.constants", reason="open_clip is a dependency")
    assert NORMALIZATIONS["clip"] == (constants.OPENAI_DATASET_MEAN, constants.OPENAI_DATASET_STD)
    assert NORMALIZATIONS["imagenet"] == (constants.IMAGENET_MEAN, constants.IMAGENET_STD)


def test_resize_noop_and_lanczos_equals_pil():
    x = _image(5, (3, *SIZE))
    assert Resize(SIZE)(x) is x
    big = _image(6, (3, 64, 40))
    pil = Image.fromarray(big.permute(1, 2, 0).numpy()).resize((SIZE[1], SIZE[0]), Image.LANCZOS)
    ours = Resize(SIZE, "lanczos")(big)
    assert torch.equal(ours, torch.from_numpy(np.array(pil)).permute(2, 0, 1))
    pil_bicubic = Image.fromarray(big.permute(1, 2, 0).numpy()).resize((SIZE[1], SIZE[0]), Image.BICUBIC)
    diff = Resize(SIZE, "bicubic")(big).int() - torch.from_numpy(np.array(pil_bicubic)).permute(2, 0, 1).int()
    assert diff.abs().max() <= 2  # torchvision's antialiased bicubic tracks PIL's filter


class _ScriptedRng:
    """Returns scripted values so an erasing box can be computed by hand."""

    def __init__(self, uniforms):
        self.uniforms = list(uniforms)

    def random(self):
        return 0.0

    def uniform(self, a, b):
        return self.uniforms.pop(0)

    def randint(self, a, b):
        return b  # bottom-right-most position

    def getrandbits(self, k):
        return 1


def test_random_erasing_box_hand_computed():
    # H=32, W=16: area fraction 0.125 -> target 64 px; aspect 2 -> h=round(sqrt(128))=11,
    # w=round(sqrt(32))=6; top = 32-11 = 21, left = 16-6 = 10.
    x = torch.zeros(3, *SIZE)
    erasing = RandomErasing(p=1.0, fill=(1.0, 2.0, 3.0))
    out = erasing(x, _ScriptedRng([0.125, 2.0]))
    expected = torch.zeros(3, *SIZE)
    for c, v in enumerate((1.0, 2.0, 3.0)):
        expected[c, 21:32, 10:16] = v
    assert torch.equal(out, expected)
    assert torch.equal(x, torch.zeros(3, *SIZE))  # not in place by default


def test_random_erasing_area_and_probability():
    x = torch.zeros(3, 64, 32)
    assert torch.equal(RandomErasing(p=0.0)(x, random.Random(0)), x)
    for name, (lo, hi) in {"caj": (0.02, 0.4), "timm": (0.02, 1 / 3)}.items():
        erasing = RandomErasing.preset(name, p=1.0)
        fractions = []
        for seed in range(200):
            box = erasing.sample_box(64, 32, random.Random(seed))
            if box is not None:
                top, left, h, w = box
                assert 0 <= top <= 64 - h and 0 <= left <= 32 - w and h < 64 and w < 32
                fractions.append(h * w / (64 * 32))
        assert len(fractions) > 150
        # rounding h and w moves the area a little beyond the sampled fraction
        assert lo * 0.6 <= min(fractions) and max(fractions) <= hi * 1.25


def test_channel_exchange_outputs_one_channel_or_gray():
    x = torch.randn(3, 8, 4)
    gray = GRAY_WEIGHTS[0] * x[0] + GRAY_WEIGHTS[1] * x[1] + GRAY_WEIGHTS[2] * x[2]
    counts = {"channel": 0, "gray": 0}
    for seed in range(200):
        for gray_k, out in ((2, ChannelExchange(2)(x, random.Random(seed))),
                            (3, ChannelExchange(3)(x, random.Random(seed)))):
            assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
            if any(torch.equal(out[0], x[c]) for c in range(3)):
                counts["channel"] += 1
            else:
                assert gray_k == 3, "gray=2 (reference setting) never produces gray"
                torch.testing.assert_close(out[0], gray)
                counts["gray"] += 1
    assert 25 <= counts["gray"] <= 75  # gray=3: 1/4 of 200 draws


def test_channel_adaptive_gray_frequencies():
    x = torch.randn(3, 8, 4)
    outcome = {"channel": 0, "gray": 0, "same": 0}
    for seed in range(4000):
        out = ChannelAdapGray(0.5)(x, random.Random(seed))
        if torch.equal(out, x):
            outcome["same"] += 1
        elif any(torch.equal(out, x[c].expand(3, -1, -1)) for c in range(3)):
            outcome["channel"] += 1
        else:
            assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
            outcome["gray"] += 1
    # reference probabilities: single channel 3/4, gray 1/8, unchanged 1/8
    assert abs(outcome["channel"] / 4000 - 0.75) < 0.03
    assert abs(outcome["gray"] / 4000 - 0.125) < 0.025
    assert abs(outcome["same"] / 4000 - 0.125) < 0.025
    never_gray = [ChannelAdapGray(0.0)(x, random.Random(s)) for s in range(100)]
    assert all(torch.equal(o, x) or torch.equal(o[0], o[1]) and
               any(torch.equal(o[0], x[c]) for c in range(3)) for o in never_gray)


def test_channel_ops_on_uint8_keep_dtype():
    x = _image(7, (3, 6, 4))
    assert ChannelExchange(3)(x, random.Random(0)).dtype == torch.uint8
    assert ChannelAdapGray(1.0)(x, random.Random(0)).dtype == torch.uint8


def test_builder_errors_name_the_problem():
    with pytest.raises(ValueError, match="erasure"):
        build_transforms(True, recipe="clipreid", erasure=0.5)
    with pytest.raises(ValueError, match="unknown transform recipe 'foo'"):
        build_transforms(True, recipe="foo")
    with pytest.raises(ValueError, match="unknown channel option 'gray'"):
        build_transforms(True, recipe="csdn", channel="gray")
    ir = build_transforms(True, recipe="csdn", channel="adaptive_gray")
    assert isinstance(ir.transforms[-1], ChannelAdapGray)
    test = build_transforms(False, recipe="csdn", channel="adaptive_gray")
    assert [type(s).__name__ for s in test.transforms] == ["Resize", "Normalize"]
    with pytest.raises(ValueError, match="different sizes"):
        Compose([HorizontalFlip(1.0)])([_image(0, (3, 4, 4)), _image(0, (3, 5, 4))])


# ------------------------------------------------------------------------------ decoding


@pytest.fixture()
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("a.jpg", "b.jpg", "c.png"):
        array = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / name, quality=95)
        paths[name] = tmp_path / name
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 not a jpeg" * 20)
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("truncated.jpg", "garbage.jpg", "empty.png"):
        paths[name] = tmp_path / name
    return paths


def test_tensor_decoding_agrees_with_pil(image_files):
    for name in ("a.jpg", "c.png"):
        ours = read_image_tensor(image_files[name])
        pil = torch.from_numpy(np.array(load_image(image_files[name]))).permute(2, 0, 1)
        assert ours.dtype == torch.uint8 and ours.shape == (3, 32, 16)
        assert (ours.int() - pil.int()).abs().max() <= 2


@pytest.mark.parametrize("name", ["truncated.jpg", "garbage.jpg", "empty.png", "missing.jpg"])
def test_bad_image_error_names_the_file(image_files, tmp_path, name):
    path = image_files.get(name, tmp_path / name)
    with pytest.raises(ImageReadError, match=name):
        read_image_tensor(path)
    with pytest.raises(ImageReadError, match=name):
        load_image(path)


# ------------------------------------------------------------------------------ datasets


def _samples(image_files, names, pid=3, modality=Modality.VISIBLE):
    return [Sample(str(image_files[n]), pid, 1, modality, label=0) for n in names]


def test_image_dataset_corrupt_file_error_surfaces_from_a_worker(image_files):
    dataset = ImageDataset(_samples(image_files, ["a.jpg", "garbage.jpg"]))
    with pytest.raises(ImageReadError, match="garbage.jpg"):
        dataset[1]
    loader = DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collate_samples)
    with pytest.raises(ImageReadError, match="garbage.jpg") as caught:
        next(iter(loader))
    # the worker's traceback stays in the message; the one-line summary names the file
    summary = error_summary(caught.value)
    assert summary.startswith("ImageReadError: cannot decode image") and "garbage.jpg" in summary
    assert "\n" not in summary


def test_skip_bad_warns_counts_and_substitutes_same_identity(image_files):
    samples = _samples(image_files, ["truncated.jpg", "b.jpg"])
    dataset = ImageDataset(samples, skip_bad=True)
    with pytest.warns(UserWarning, match="truncated.jpg"):
        item = dataset[0]
    assert item["num_bad"] == 1 and dataset.num_bad == 1
    assert torch.equal(item["image"], read_image_tensor(image_files["b.jpg"]))
    assert item["pid"] == 3 and item["index"] == 0
    only_bad = ImageDataset(_samples(image_files, ["truncated.jpg", "garbage.jpg"]), skip_bad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ImageReadError, match="no readable image of identity 3"):
            only_bad[0]


def test_image_dataset_views_per_modality_and_collate(image_files):
    vis = _samples(image_files, ["a.jpg", "b.jpg"])
    ir = _samples(image_files, ["c.png"], modality=Modality.INFRARED)
    transform = {
        "visible": [build_transforms(True, SIZE, recipe="csdn"),
                    build_transforms(True, SIZE, recipe="csdn", channel="exchange")],
        "infrared": build_transforms(True, SIZE, recipe="csdn", channel="adaptive_gray"),
    }
    dataset = ImageDataset(vis + ir, transform, seed=1)
    batch = collate_samples([dataset[i] for i in range(3)])
    assert batch["image"].shape == (5, 3, *SIZE)  # 3 primary images + 2 second visible views
    assert batch["view"].tolist() == [0, 0, 0, 1, 1]
    assert batch["index"].tolist() == [0, 1, 2, 0, 1]
    assert batch["modality"].tolist() == [0, 0, 1, 0, 0]
    second_views = batch["image"][3:]
    assert all(torch.equal(v[0], v[1]) and torch.equal(v[1], v[2]) for v in second_views)
    # per-item random sources: reproducible for (seed, epoch, index), new with the epoch
    epoch0 = [dataset[i]["image"] for i in range(3)]
    assert all(torch.equal(a, dataset[i]["image"]) for i, a in enumerate(epoch0))
    dataset.set_epoch(1)
    epoch1 = [dataset[i]["image"] for i in range(3)]
    assert any(not torch.equal(a, b) for a, b in zip(epoch0, epoch1))


def _tracklet_files(tmp_path, n):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = tmp_path / f"track/{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((32, 16, 3), 20 * i, dtype=np.uint8)
                        + rng.integers(0, 3, (32, 16, 3), dtype=np.uint8)).save(path, quality=95)
        paths.append(str(path))
    return tuple(paths)


def test_tracklet_dataset_rrs_dense_and_bad_frames(tmp_path):
    frames = _tracklet_files(tmp_path, 8)
    sample = Sample(frames, 5, 2, Modality.INFRARED, label=1)
    t = build_transforms(False, SIZE, recipe="clipreid")
    rrs = TrackletDataset([sample], t, seq_len=4, frame_sampler="rrs", seed=3)
    item = rrs[0]
    assert item["image"].shape == (4, 3, *SIZE) and item["modality"] == 1
    assert torch.equal(item["image"], rrs[0]["image"])
    first = TrackletDataset([sample], t, seq_len=4, frame_sampler="first_of_chunk")[0]["image"]
    expected = torch.stack([t(read_image_tensor(frames[i])) for i in (0, 2, 4, 6)])
    assert torch.equal(first, expected)

    dense = TrackletDataset([sample, sample], t, seq_len=3, frame_sampler="dense")
    batch = collate_samples([dense[0], dense[1]])
    assert batch["image"].shape == (6, 3, 3, *SIZE)  # ceil(8/3) = 3 clips per tracklet
    assert batch["clip_owner"].tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(batch["image"][2, 2], batch["image"][2, 0])  # last clip [6, 7, 6]

    (tmp_path / "track/2.jpg").write_bytes(b"broken")
    with pytest.raises(ImageReadError, match="2.jpg"):
        TrackletDataset([sample], t, seq_len=4, frame_sampler="first_of_chunk")[0]
    tolerant = TrackletDataset([sample], t, seq_len=4, frame_sampler="first_of_chunk", skip_bad=True)
    with pytest.warns(UserWarning, match="2.jpg"):
        item = tolerant[0]
    assert item["num_bad"] == 1
    # frame 2 replaced by its nearest readable neighbour, frame 1
    assert torch.equal(item["image"][1], t(read_image_tensor(frames[1])))


def test_draft_decoding_reduces_large_jpegs_only(tmp_path):
    array = np.random.default_rng(3).integers(0, 256, (128, 64, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "big.jpg", quality=95)
    # PIL's JPEG draft picks the smallest 1/2^k scale still >= the request: 1/4 here
    assert read_image_tensor(tmp_path / "big.jpg", draft_size=(32, 16)).shape == (3, 32, 16)
    assert read_image_tensor(tmp_path / "big.jpg", draft_size=(100, 50)).shape == (3, 128, 64)
    assert load_image(tmp_path / "big.jpg", draft_size=(64, 32)).size == (32, 64)
