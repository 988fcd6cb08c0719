"""Using a trained model: load without the dataset, extract, cache, search, CLI verbs."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import vireid
from vireid.cli import main
from vireid.data.io import read_image_tensor
from vireid.data.types import Modality, Sample
from vireid.engine.checkpoint import load_method_weights
from vireid.evaluation.evaluator import extract_features
from vireid.evaluation.rerank import k_reciprocal_rerank
from vireid.retrieval.features import load_feature_set
from vireid.retrieval.index import FeatureIndex, faiss_available
from vireid.runner import build, config_of_checkpoint, evaluate_checkpoint

pytest_plugins = ["_trained_model"]  # fixtures: trained, video_checkpoint


def _training_path_features(ckpt, samples):
    """Features through the training code path: method built with its dataset."""
    _, method = build(config_of_checkpoint(ckpt))
    load_method_weights(method, ckpt)
    return torch.nn.functional.normalize(extract_features(method, samples, 16), dim=1)


def test_load_model_needs_no_dataset_and_matches_the_training_path(trained):
    root, run, ckpt = trained
    model = vireid.load_model(run, overrides=["data.root=/nonexistent/place"])
    assert model.checkpoint == ckpt and not model.is_video
    data, _ = build(config_of_checkpoint(ckpt))
    assert model.num_classes == data.num_classes  # read off the weights' shapes
    samples = list(data.splits[0].query[:5])
    expected = _training_path_features(ckpt, samples)
    got = model.extract([s.path for s in samples], modality="infrared")
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_extract_accepts_pil_tensors_and_tracklets(trained):
    root, run, _ = trained
    model = vireid.load_model(run)
    paths = sorted(str(p) for p in (root / "cam3").rglob("*.jpg"))[:4]
    by_path = model.extract(paths, modality="ir")
    pil = model.extract([Image.open(p) for p in paths], modality="ir")
    uint8 = torch.stack([read_image_tensor(p) for p in paths])
    as_u8 = model.extract(uint8, modality=["ir"] * 4)
    as_float = model.extract(uint8.float() / 255, modality="ir")
    for other in (pil, as_u8, as_float):
        torch.testing.assert_close(other, by_path, atol=1e-4, rtol=0)
    # an image model embeds each frame of a tracklet and averages: hand-computed here
    tracklet = model.extract([paths[:3]], modality="ir")
    raw = extract_features(model.method, [Sample(p, -1, 0, Modality.INFRARED) for p in paths[:3]],
                           8)
    mean = torch.nn.functional.normalize(raw.mean(0, keepdim=True), dim=1)
    torch.testing.assert_close(tracklet, mean, atol=1e-5, rtol=0)
    folder = root / "cam3" / sorted(os.listdir(root / "cam3"))[0]
    assert model.extract(folder, modality="ir").shape == (1, by_path.shape[1])


def test_extract_bad_input_is_named(trained, tmp_path):
    _, run, _ = trained
    model = vireid.load_model(run)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        model.extract([str(tmp_path / "nope.jpg")], modality="visible")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.extract(torch.full((3, 64, 32), 2.0), modality="visible")
    with pytest.raises(ValueError, match="channels last"):
        model.extract(torch.zeros(64, 32, 3, dtype=torch.uint8).unsqueeze(0)[0], modality="v")
    with pytest.raises(ValueError, match="unknown modality"):
        model.extract(torch.zeros(3, 64, 32, dtype=torch.uint8), modality="ultraviolet")
    with pytest.raises(ValueError, match="2 values given for 1 inputs"):
        model.extract(torch.zeros(3, 64, 32, dtype=torch.uint8), modality=["v", "ir"])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        vireid.load_model(tmp_path)


def test_video_model_extracts_tracklets_like_the_training_path(video_checkpoint):
    root, ckpt = video_checkpoint
    model = vireid.load_model(ckpt)
    assert model.is_video
    data, _ = build(config_of_checkpoint(ckpt))
    tracklets = list(data.splits[0].gallery[:3])
    expected = _training_path_features(ckpt, tracklets)
    got = model.extract([list(t.path) for t in tracklets], modality="visible")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    one = model.extract(tracklets[0].path[0], modality="visible")  # an image: a 1-frame clip
    clip = model.extract([[tracklets[0].path[0]]], modality="visible")
    torch.testing.assert_close(one, clip)


def test_evaluate_api_equals_vireid_eval(trained):
    _, run, ckpt = trained
    via_api = vireid.evaluate(vireid.load_model(run))
    via_runner = evaluate_checkpoint(ckpt)
    for key, group in via_runner.items():
        if key != "splits":
            assert via_api[key]["mean"] == pytest.approx(group["mean"], abs=1e-6)
    reranked = evaluate_checkpoint(ckpt, rerank=True)
    assert set(reranked) == set(via_runner)
    assert any(reranked[k]["mean"] != via_runner[k]["mean"] for k in via_runner if k != "splits")
    api_reranked = vireid.evaluate(run, rerank=True)  # from the run folder, re-ranked
    for key, group in reranked.items():
        if key != "splits":
            assert api_reranked[key]["mean"] == pytest.approx(group["mean"], abs=1e-6)


def _gallery(root, dest, cams=("cam1",)):
    for cam in cams:
        shutil.copytree(root / cam, dest / cam)
    return dest


def test_cache_is_reused_and_rebuilt_when_stale(trained, tmp_path, monkeypatch):
    root, run, _ = trained
    gallery = _gallery(root, tmp_path / "gallery")
    cache = tmp_path / "cache.safetensors"
    model = vireid.load_model(run)
    first = vireid.Retriever(model, gallery=gallery, cache=cache)
    assert first.cache_status == "built" and cache.is_file()
    stored = load_feature_set(cache)
    n = len(stored)
    assert stored.model == model.fingerprint and len(set(stored.paths)) == n
    assert (stored.cams == 1).all() and (stored.ids >= 0).all()  # read off cam1/<id>/ folders

    def no_extraction(*a, **k):
        raise AssertionError("features recomputed although the cache is valid")

    monkeypatch.setattr(model, "extract_samples", no_extraction)
    again = vireid.Retriever(model, gallery=gallery, cache=cache)
    assert again.cache_status == "reused"
    torch.testing.assert_close(again.gallery.features, first.gallery.features)
    monkeypatch.undo()

    extra = sorted(gallery.rglob("*.jpg"))[0]
    shutil.copy(extra, extra.with_name("added.jpg"))
    grown = vireid.Retriever(model, gallery=gallery, cache=cache)
    assert grown.cache_status == "rebuilt (the gallery files changed)" and len(grown) == n + 1

    other = vireid.load_model(run, overrides=["eval.flip_test=true"])
    assert other.fingerprint != model.fingerprint
    swapped = vireid.Retriever(other, gallery=gallery, cache=cache)
    assert swapped.cache_status == "rebuilt (computed by another model)"

    # Something that is not a cache of ours is never overwritten.
    cache.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        vireid.Retriever(model, gallery=gallery, cache=cache)
    assert cache.read_bytes() == b"garbage"


def test_search_ranks_like_brute_force_and_reranks(trained, tmp_path):
    root, run, _ = trained
    gallery = _gallery(root, tmp_path / "gallery", cams=("cam1", "cam2"))
    model = vireid.load_model(run)
    retriever = vireid.Retriever(model, gallery=gallery, backend="torch")
    g = retriever.gallery
    queries = sorted(str(p) for p in (root / "cam3").rglob("*.jpg"))[:3]
    result = retriever.search(queries, topk=5, modality="infrared")
    qf = model.extract(queries, modality="infrared")
    sims = qf @ g.features.T
    order = sims.argsort(dim=1, descending=True)[:, :5]
    assert torch.equal(result.indices, order)
    torch.testing.assert_close(result.distances, 1 - sims.gather(1, order), atol=1e-5, rtol=0)
    top = result[0][0]
    assert top.rank == 1 and top.path == g.paths[order[0, 0]] and top.modality == "visible"
    # a gallery image as query finds itself first
    self_hit = retriever.search(g.paths[7], topk=1, modality="visible")
    assert self_hit.indices[0, 0] == 7 and self_hit.distances[0, 0] < 1e-5
    reranked = retriever.search(queries, topk=5, rerank=True, k1=6, k2=3)
    dist = k_reciprocal_rerank(qf, g.features, 6, 3, 0.3)
    assert reranked.reranked and torch.equal(reranked.indices, dist.argsort(dim=1)[:, :5])


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed (pip install faiss-cpu)")
def test_faiss_and_torch_give_the_same_results():
    gen = torch.Generator().manual_seed(0)
    gallery = torch.randn(3000, 48, generator=gen)
    queries = torch.randn(40, 48, generator=gen)
    exact = FeatureIndex(gallery, backend="torch")
    fast = FeatureIndex(gallery, backend="faiss")
    assert fast.backend == "faiss"
    s1, i1 = exact.search(queries, 20)
    s2, i2 = fast.search(queries, 20)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=0)
    brute = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(
        gallery, dim=1).T
    assert torch.equal(i1, brute.topk(20, dim=1).indices)


def test_faiss_missing_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"vireid\[faiss\]"):
        FeatureIndex(torch.randn(10, 4), backend="faiss")


def test_cli_extract_evaluate_search(trained, tmp_path, capsys):
    root, run, ckpt = trained
    split_file = tmp_path / "split.safetensors"
    assert main(["extract", "--ckpt", str(run), "--split", "all-search/trial0",
                 "--out", str(split_file), "--device", "cpu"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["split"] == "all-search/trial0" and info["query"] > 0
    assert main(["evaluate", "--features", str(split_file), "--protocol", "sysu", "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    trial0 = evaluate_checkpoint(ckpt)["all-search ir->vis"]["trials"][0]
    assert from_file["mAP"] == pytest.approx(trial0["mAP"], abs=1e-6)

    gallery = _gallery(root, tmp_path / "gallery")
    feats = tmp_path / "gallery.safetensors"
    assert main(["extract", "--ckpt", str(run), "--folder", str(gallery),
                 "--out", str(feats)]) == 0
    n = json.loads(capsys.readouterr().out)["items"]
    query = sorted(str(p) for p in (root / "cam6").rglob("*.jpg"))[0]
    for source in (str(feats), str(gallery)):
        assert main(["search", "--ckpt", str(run), "--query", query, "--gallery", source,
                     "--topk", "4", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        ranked = out["queries"][0]
        assert [m["rank"] for m in ranked] == [1, 2, 3, 4]
        assert all(0 <= m["index"] < n for m in ranked)
        assert np.all(np.diff([m["distance"] for m in ranked]) >= 0)
    assert main(["search", "--ckpt", str(run), "--query", query, "--gallery", str(gallery),
                 "--cache", str(feats), "--topk", "2"]) == 0
    printed = capsys.readouterr().out
    assert "cache reused" in printed and printed.count("d=") == 2

    assert main(["eval", "--ckpt", str(ckpt), "--rerank", "--json"]) == 0
    reranked = json.loads(capsys.readouterr().out)
    assert "all-search ir->vis" in reranked

    code = main(["search", "--ckpt", str(run), "--query", str(tmp_path / "missing.jpg"),
                 "--gallery", str(gallery)])
    err = capsys.readouterr().err
    assert code == 2 and "missing.jpg" in err and "Traceback" not in err
    code = main(["extract", "--ckpt", str(run), "--out", str(tmp_path / "x.safetensors")])
    assert code == 2 and "--split" in capsys.readouterr().err


def test_an_override_that_fails_validation_is_named_as_the_override(trained):
    _, _, ckpt = trained
    from vireid.config import ConfigError

    with pytest.raises(ConfigError, match=r"eval.batch_size: .*set in override 'eval.batch_size=0'"):
        vireid.load_model(ckpt, overrides=["eval.batch_size=0"])


def test_a_checkpoint_without_its_data_spec_loads_through_its_dataset(trained, tmp_path):
    """Checkpoints written before methods stored their data spec: the spec is read from
    the dataset when it is reachable, else the error says what to do."""
    from vireid.engine.checkpoint import CheckpointError

    root, _, ckpt = trained
    old = torch.load(ckpt, weights_only=True)
    for key in ("data_num_classes", "data_cameras"):
        del old["method"][key]
    torch.save(old, tmp_path / "old.pt")
    model = vireid.load_model(tmp_path / "old.pt", overrides=[f"data.root={root}"])
    assert model.num_classes == vireid.load_model(ckpt).num_classes
    with pytest.raises(CheckpointError, match=r"older vireid.*'data\.root=\.\.\.'"):
        vireid.load_model(tmp_path / "old.pt", overrides=["data.root=/no/such/dataset"])
