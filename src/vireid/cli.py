"""The ``vireid`` command: a thin layer over the library.

    vireid data synth --layout sysu --root DIR [--ids N] [--seed S]
    vireid data check sysu --root DIR [-o mode=indoor]
    vireid evaluate --features FILE --protocol sysu [--json]
    vireid config -c CONFIG [key=value ...]
    vireid train -c CONFIG [key=value ...]          (multi-GPU: torchrun --nproc_per_node N -m vireid train ...)
    vireid eval -c CONFIG --ckpt PATH [key=value ...] [--rerank]
    vireid extract --ckpt PATH (--split NAME | --folder DIR) --out FILE.safetensors
    vireid search --ckpt PATH --query PATH --gallery DIR|FEATURES [--topk K] [--rerank]
    vireid report [-c CONFIG] --ckpt PATH [--out DIR] [--queries N] [--topk K]
    vireid export --ckpt PATH --onnx FILE.onnx
    vireid demo [--workdir runs/demo]
    vireid weights fetch ViT-B-16 --to DIR
    vireid clip pretrain --backbone synth-vit-p8 --out FILE.safetensors [--resume]
    vireid clip zeroshot (--weights FILE | --backbone synth-vit-p8) [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import yaml

from vireid import __version__


class UsageError(ValueError):
    """A command-line value the user can fix."""


def _parse_options(pairs: Sequence[str]) -> dict:
    """``["mode=indoor", "trials=3"]`` -> ``{"mode": "indoor", "trials": 3}`` (YAML scalars)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"option {pair!r} is not of the form key=value")
        options[key.strip()] = yaml.safe_load(value) if value else ""
    return options


def _cmd_synth(args) -> int:
    from vireid.data.synthetic import synthesize

    stats = synthesize(
        args.layout, args.root, num_ids=args.ids, seed=args.seed,
        image_size=tuple(args.image_size), **_parse_options(args.option),
    )
    print(json.dumps(stats, indent=2, default=str))
    return 0


def _cmd_check(args) -> int:
    from vireid.data.datasets import (
        check_images,
        dataset_files,
        dataset_stats,
        format_bad_images,
        load_dataset,
    )
    from vireid.data.datasets import format_stats as format_table

    data = load_dataset(args.name, args.root, **_parse_options(args.option))
    stats = dataset_stats(data)
    if not args.quick:
        files = dataset_files(data)
        bad = check_images(files, workers=args.workers, progress=sys.stderr.isatty())
        stats["decoded"] = {"files": len(files), "bad": [{"path": p, "reason": r} for p, r in bad]}
        if bad:
            print(json.dumps(stats, indent=2, default=str) if args.json else format_table(stats))
            raise UsageError(format_bad_images(bad, len(files)))
    print(json.dumps(stats, indent=2, default=str) if args.json else format_table(stats))
    return 0


def _cmd_evaluate(args) -> int:
    from vireid.evaluation.evaluator import REPORTED_RANKS, evaluate_feature_file

    metrics = evaluate_feature_file(args.features, args.protocol, distance=args.distance)
    if args.json:
        out = metrics.as_dict()
        out["protocol"] = args.protocol
        print(json.dumps(out))
        return 0
    ranks = "  ".join(f"R{k} {100 * metrics.rank(k):6.2f}" for k in REPORTED_RANKS)
    print(f"{args.protocol}: {metrics.num_valid} valid of {metrics.num_query} queries")
    print(f"{ranks}  mAP {100 * metrics.mAP:6.2f}  mINP {100 * metrics.mINP:6.2f}")
    return 0


def _cmd_config(args) -> int:
    from vireid.config import cfg_to_yaml, load_config

    print(cfg_to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _print_summary(summary: dict, as_json: bool) -> None:
    from vireid.evaluation.evaluator import format_summary

    if as_json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))


def _cmd_train(args) -> int:
    from vireid.comm import is_main_process
    from vireid.config import load_config
    from vireid.engine.trainer import NonFiniteLossError
    from vireid.runner import train

    cfg = load_config(args.config, args.overrides)
    try:
        if args.trials:
            from vireid.runner import train_trials

            summary = train_trials(cfg, _parse_trials(args.trials))
        else:
            summary = train(cfg)
    except NonFiniteLossError as err:  # the run stopped itself; its message says where
        print(f"vireid train: error: {err}", file=sys.stderr)
        return 2
    if is_main_process() and summary:
        _print_summary({k: v for k, v in summary.items() if k != "splits"}, args.json)
    return 0


def _parse_trials(text: str) -> list[int]:
    """``"1-10"`` or ``"1,3,5"`` -> trial numbers."""
    trials: list[int] = []
    for part in text.split(","):
        low, sep, high = part.partition("-")
        try:
            trials += list(range(int(low), int(high) + 1)) if sep else [int(low)]
        except ValueError:
            raise UsageError(f"--trials {text!r}: expected e.g. 1-10 or 1,3,5") from None
    return trials


def _cmd_eval(args) -> int:
    from vireid.runner import evaluate_checkpoint

    overrides = list(args.overrides)
    if args.device is not None:
        _device(args.device)
        overrides.append(f"train.device={args.device}")
    summaries = [
        evaluate_checkpoint(c, args.config, overrides, rerank=True if args.rerank else None)
        for c in args.ckpt
    ]
    if len(summaries) == 1:
        summary = summaries[0]
    else:  # separately trained models (e.g. RegDB's trials): every row, mean and std
        from vireid.runner import merge_trial_summaries

        summary = merge_trial_summaries(summaries)
    _print_summary(summary if args.json else {k: v for k, v in summary.items() if k != "splits"},
                   args.json)
    return 0


def _device(spec: str):
    """``--device``: :func:`vireid.utils.resolve_device`, its error as a usage error."""
    from vireid.utils import resolve_device

    try:
        return resolve_device(spec)
    except ValueError as err:
        raise UsageError(f"--device {spec}: {str(err).split(': ', 1)[-1]}") from None


def _load_model(args):
    from vireid.retrieval.model import load_model

    return load_model(args.ckpt, device=_device(args.device), config=args.config,
                      overrides=args.overrides, batch_size=args.batch_size)


def _cmd_extract(args) -> int:
    from vireid.retrieval.features import (
        FeatureSet,
        files_digest,
        list_gallery_folder,
        save_feature_set,
        save_query_gallery,
    )

    if (args.split is None) == (args.folder is None):
        raise UsageError("give one of --split NAME (a split of the dataset) or --folder DIR")
    model = _load_model(args)
    meta = {"model": model.fingerprint, "checkpoint": str(model.checkpoint)}
    if args.folder is not None:
        samples = list_gallery_folder(args.folder, model.is_video, args.modality)
        feats = model.extract_samples(samples)
        out = save_feature_set(args.out, FeatureSet.from_samples(
            feats, samples, {**meta, "files": files_digest(samples)}))
        info = {"out": str(out), "items": len(samples), "dim": int(feats.shape[1])}
    else:
        from vireid.data.datasets import load_data
        from vireid.evaluation.evaluator import select_splits, split_features

        split = select_splits(load_data(model.config).splits, [args.split])[0]
        ((query, gallery),) = split_features(model.extract_samples, [split])
        q = FeatureSet.from_samples(query, split.query)
        g = FeatureSet.from_samples(gallery, split.gallery)
        out = save_query_gallery(args.out, q, g, {**meta, "split": split.name,
                                                  "protocol": split.protocol})
        info = {"out": str(out), "split": split.name, "protocol": split.protocol,
                "query": len(q), "gallery": len(g), "dim": int(query.shape[1])}
    print(json.dumps(info))
    return 0


def _cmd_search(args) -> int:
    from vireid.retrieval.search import Retriever

    model = _load_model(args)
    try:
        retriever = Retriever(model, args.gallery, cache=args.cache,
                              modality=args.gallery_modality, backend=args.backend)
    except ImportError as err:
        raise UsageError(str(err)) from None
    result = retriever.search(args.query, topk=args.topk, rerank=args.rerank,
                              modality=args.modality)
    if args.json:
        out = result.to_dict()
        out["query_paths"] = list(args.query)
        out["cache"] = retriever.cache_status
        print(json.dumps(out))
        return 0
    if retriever.cache_status == "loaded":
        print(f"gallery: {len(retriever)} items, features read from {args.gallery}")
    elif retriever.cache_status:
        print(f"gallery: {len(retriever)} items, cache {retriever.cache_status}")
    for q, path in enumerate(args.query):
        print(f"query {path}")
        for m in result[q]:
            where = m.path if isinstance(m.path, str) else f"{m.path[0]} ({len(m.path)} frames)"
            print(f"  {m.rank:3d}  d={m.distance:.4f}  id {m.id:>5}  cam {m.camera:>2}  {where}")
    return 0


def _cmd_report(args) -> int:
    from pathlib import Path

    from vireid.data.datasets import load_data
    from vireid.retrieval.report import write_report

    model = _load_model(args)
    if args.out is not None:
        out = Path(args.out)
    elif model.checkpoint.parent.name == "checkpoints":
        out = model.checkpoint.parent.parent / "report"
    else:
        out = model.checkpoint.parent / "report"
    rerank = model.config.eval.rerank if args.rerank else None
    page = write_report(model, load_data(model.config), out,
                        splits=args.split or model.config.eval.splits,
                        num_queries=args.queries, topk=args.topk, rerank=rerank, seed=args.seed)
    print(page)
    return 0


def _cmd_export(args) -> int:
    from vireid.retrieval.export import check_opset, export_onnx

    check_opset(args.opset)  # before the model is built
    model = _load_model(args)
    try:
        report = export_onnx(model, args.onnx, opset=args.opset, modality=args.modality,
                             check=not args.no_check)
    except ImportError as err:
        raise UsageError(str(err)) from None
    shape = "x".join(str(v) for v in report.input_shape[1:])
    print(f"wrote {report.path}: {report.input_name} (B x {shape}, normalised) -> "
          f"features (B x {report.feature_dim}, L2-normalised)")
    if report.max_abs_diff is not None:
        print(f"onnxruntime vs PyTorch: max abs diff {report.max_abs_diff:.3g} "
              f"(limit 1e-4)")
    return 0


def _cmd_demo(args) -> int:
    from vireid.runner import demo

    demo(args.workdir, seed=args.seed, overrides=args.overrides)
    return 0


def _cmd_weights_fetch(args) -> int:
    from vireid.models.weights import fetch_weights

    print(fetch_weights(args.name, args.to))
    return 0


def _set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads (None leaves torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _cmd_clip_pretrain(args) -> int:
    from vireid.clip_pretrain.train import Recipe, pretrain

    _set_threads(args.threads)
    recipe = Recipe(
        backbone=args.backbone, seed=args.seed, num_ids=args.ids,
        images_per_id=args.images_per_id, image_size=tuple(args.image_size), steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, colour_prob=args.colour_prob, keep_prob=args.keep_prob,
        gray_prob=args.gray_prob,
    )
    from vireid.models.factory import backbone_config

    backbone_config(args.backbone)  # unknown names fail before any rendering
    summary = pretrain(recipe, args.out, checkpoint=args.checkpoint, resume=args.resume,
                       checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                       log=args.log)
    print(json.dumps(summary))
    return 0


def _cmd_clip_zeroshot(args) -> int:
    from vireid.clip_pretrain.zeroshot import format_zeroshot, load_clip, zeroshot

    if args.ids < 2 or args.images_per_id < 1:
        raise UsageError(f"--ids must be >= 2 and --images-per-id >= 1, got {args.ids}, "
                         f"{args.images_per_id}")
    _set_threads(args.threads)
    model = load_clip(args.weights, args.backbone,
                      tuple(args.image_size) if args.image_size else None)
    result = zeroshot(model, seed=args.seed, num_ids=args.ids, images_per_id=args.images_per_id)
    print(json.dumps(result) if args.json else format_zeroshot(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vireid.data.protocols import PROTOCOLS
    from vireid.data.synthetic import LAYOUTS

    parser = argparse.ArgumentParser(
        prog="vireid",
        description="CLIP-based visible-infrared person re-identification (images and video).",
    )
    parser.add_argument("--version", action="version", version=f"vireid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="generate synthetic datasets, check real ones")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synth = data_sub.add_parser(
        "synth", help="write a synthetic dataset in the exact layout of a benchmark"
    )
    synth.add_argument("--layout", required=True, choices=LAYOUTS)
    synth.add_argument("--root", required=True, help="dataset folder to write (e.g. data/SYSU-MM01)")
    synth.add_argument("--ids", type=int, default=None, help="number of identities (layout default)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    synth.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                       help="layout option, repeatable (e.g. split_dirs=false for HITSZ-VCM)")
    synth.set_defaults(func=_cmd_synth)

    check = data_sub.add_parser("check", help="validate a dataset and print its statistics")
    check.add_argument("name", help="sysu, regdb, llcm, vcm or bupt")
    check.add_argument("--root", required=True, help="the dataset folder")
    check.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                       help="loader option, repeatable (e.g. mode=indoor, trial=3)")
    check.add_argument("--json", action="store_true", help="print the statistics as JSON")
    check.add_argument("--quick", action="store_true",
                       help="only check that the files exist (default: decode every image)")
    check.add_argument("--workers", type=int, default=None,
                       help="decoding threads (default: up to 8)")
    check.set_defaults(func=_cmd_check)

    ev = sub.add_parser(
        "evaluate",
        help="score features computed by any framework under a benchmark's protocol",
        description="Reads a safetensors file with query_features, query_ids, query_cams, "
        "gallery_features, gallery_ids, gallery_cams; L2-normalises the features, ranks by "
        "cosine similarity and applies the protocol's keep rule and CMC variant. The query and "
        "gallery sets are evaluated as given.",
    )
    ev.add_argument("--features", required=True, help="safetensors file")
    ev.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS))
    ev.add_argument("--distance", default="cosine", choices=("cosine", "euclidean"),
                    help="cosine of L2-normalised features (default) or Euclidean distance "
                    "of the features as given")
    ev.add_argument("--json", action="store_true",
                    help="print one JSON object: cmc (ranks 1..20, fewer when the ranked "
                    "lists are shorter), mAP, mINP as fractions")
    ev.set_defaults(func=_cmd_evaluate)

    tr = sub.add_parser("train", help="train a method (multi-GPU: torchrun ... -m vireid train)")
    tr.add_argument("-c", "--config", required=True, help="YAML config file")
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.root=DIR")
    tr.add_argument("--json", action="store_true", help="print the final evaluation as JSON")
    tr.add_argument("--trials", default=None, metavar="SPEC",
                    help="RegDB: train one model per trial (e.g. 1-10) and average them")
    tr.set_defaults(func=_cmd_train)

    evc = sub.add_parser("eval", help="evaluate a checkpoint under its dataset's protocol")
    evc.add_argument("--ckpt", required=True, action="append",
                     help="checkpoint written by vireid train; repeat it to average separately "
                     "trained models (RegDB: one per trial)")
    evc.add_argument("-c", "--config", default=None,
                     help="YAML config (default: the config stored in the checkpoint)")
    evc.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.root=/elsewhere")
    evc.add_argument("--json", action="store_true", help="print per-split results as JSON")
    evc.add_argument("--rerank", action="store_true",
                     help="k-reciprocal re-ranking (settings: eval.rerank.k1/k2/lambda_value)")
    evc.add_argument("--device", default=None,
                     help="cpu, cuda, cuda:1 or auto (default: train.device of the config)")
    evc.set_defaults(func=_cmd_eval)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ckpt", required=True, help="checkpoint file or run folder")
        p.add_argument("-c", "--config", default=None,
                       help="YAML config (default: the config stored in the checkpoint)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="config overrides, e.g. data.root=/elsewhere eval.flip_test=true")
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
        p.add_argument("--batch-size", type=int, default=None,
                       help="images per forward pass (default: eval.batch_size)")

    ex = sub.add_parser("extract", help="features of a dataset split or a folder to safetensors")
    model_args(ex)
    ex.add_argument("--split", default=None,
                    help="evaluation split of the config's dataset (e.g. all-search/trial0); "
                    "writes query_* and gallery_* arrays, readable by vireid evaluate")
    ex.add_argument("--folder", default=None,
                    help="every image under DIR (video models: every folder of frames)")
    ex.add_argument("--modality", default="visible", help="modality of --folder images")
    ex.add_argument("--out", required=True, help="safetensors file to write")
    ex.set_defaults(func=_cmd_extract)

    se = sub.add_parser("search", help="rank a gallery for query images or tracklets")
    model_args(se)
    se.add_argument("--query", required=True, action="append",
                    help="image file or folder of frames (repeatable)")
    se.add_argument("--gallery", required=True,
                    help="folder of images / tracklet folders, or a file of vireid extract")
    se.add_argument("--topk", type=int, default=10)
    se.add_argument("--cache", default=None,
                    help="safetensors cache of the gallery features (rebuilt when stale)")
    se.add_argument("--modality", default="infrared", help="query modality (default infrared)")
    se.add_argument("--gallery-modality", default="visible",
                    help="gallery modality (default visible)")
    se.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    se.add_argument("--backend", default="auto", choices=("auto", "torch", "faiss"))
    se.add_argument("--json", action="store_true", help="print the ranked lists as JSON")
    se.set_defaults(func=_cmd_search)

    rp = sub.add_parser("report", help="HTML report: metrics, CMC, ranked-list pictures")
    model_args(rp)
    rp.add_argument("--out", default=None, help="folder to write (default: <run>/report)")
    rp.add_argument("--split", action="append", default=None,
                    help="evaluate only this split or setting (repeatable; default eval.splits)")
    rp.add_argument("--queries", type=int, default=8, help="queries shown per setting")
    rp.add_argument("--topk", type=int, default=10, help="gallery items shown per query")
    rp.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    rp.add_argument("--seed", type=int, default=0, help="seed of the query sample")
    rp.set_defaults(func=_cmd_report)

    xp = sub.add_parser("export", help="export the image (or clip) encoder")
    model_args(xp)
    xp.add_argument("--onnx", required=True, help="ONNX file to write (needs vireid[onnx])")
    xp.add_argument("--opset", type=int, default=17)
    xp.add_argument("--modality", default="visible",
                    help="modality given to the method while tracing")
    xp.add_argument("--no-check", action="store_true",
                    help="skip the onnxruntime parity check (max abs diff <= 1e-4)")
    xp.set_defaults(func=_cmd_export)

    dm = sub.add_parser("demo", help="synthetic people -> CLIP-ReID from the shipped synthetic ViT CLIP, CPU -> evaluate")
    dm.add_argument("--workdir", default="runs/demo", help="where the dataset and the run go")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    dm.set_defaults(func=_cmd_demo)

    wt = sub.add_parser("weights", help="pretrained CLIP weights")
    wt_sub = wt.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    fetch = wt_sub.add_parser(
        "fetch", help="download (needs a network) and convert to safetensors with a sha256"
    )
    fetch.add_argument("name", help="e.g. ViT-B-16 or RN50 (OpenAI weights)")
    fetch.add_argument("--to", required=True, help="destination folder")
    fetch.set_defaults(func=_cmd_weights_fetch)

    cl = sub.add_parser("clip", help="synthetic CLIP: pretrain on captioned synthetic people, "
                        "zero-shot check")
    cl_sub = cl.add_subparsers(dest="clip_command", required=True, metavar="ACTION")
    pre = cl_sub.add_parser(
        "pretrain", help="contrastive pretraining on captioned visible synthetic people",
        description="CLIP's recipe (symmetric InfoNCE, learnable temperature, AdamW, warm-up + "
        "cosine) on a population of synthetic people disjoint from every benchmark, rendered "
        "in memory. Writes fp16 safetensors (+ .sha256) for model.weights=FILE.",
    )
    pre.add_argument("--backbone", required=True, help="e.g. synth-vit-p8, synth-rn, tiny-vit-p8")
    pre.add_argument("--out", required=True, help="weight file to write (.safetensors)")
    pre.add_argument("--steps", type=int, default=600)
    pre.add_argument("--batch-size", type=int, default=256, help="distinct identities per step")
    pre.add_argument("--lr", type=float, default=1e-3)
    pre.add_argument("--warmup-steps", type=int, default=50)
    pre.add_argument("--weight-decay", type=float, default=0.2)
    pre.add_argument("--ids", type=int, default=4000, help="identities of the population")
    pre.add_argument("--images-per-id", type=int, default=4)
    pre.add_argument("--image-size", type=int, nargs=2, default=(64, 32), metavar=("H", "W"))
    pre.add_argument("--colour-prob", type=float, default=0.6,
                     help="share of captions that name colours")
    pre.add_argument("--keep-prob", type=float, default=0.75,
                     help="probability of keeping each detail clause of a caption")
    pre.add_argument("--gray-prob", type=float, default=0.2,
                     help="share of images turned grey (their captions name no colour)")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--checkpoint", default=None, help="checkpoint file (default OUT.ckpt)")
    pre.add_argument("--checkpoint-every", type=int, default=50, help="steps; 0: only at the end")
    pre.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    pre.add_argument("--log", default=None, help="JSON-lines file: loss, temperature, lr per step")
    pre.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.set_defaults(func=_cmd_clip_pretrain)
    zs = cl_sub.add_parser(
        "zeroshot", help="attribute and caption retrieval on held-out synthetic people, "
        "visible and infrared, beside chance",
    )
    zs.add_argument("--weights", default=None, help="weight file (default: the shipped "
                    "synthetic weights of --backbone)")
    zs.add_argument("--backbone", default=None, help="backbone (read from the file's metadata "
                    "for files of vireid clip pretrain)")
    zs.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    zs.add_argument("--ids", type=int, default=200, help="held-out identities")
    zs.add_argument("--images-per-id", type=int, default=4, help="images per modality")
    zs.add_argument("--seed", type=int, default=0)
    zs.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    zs.add_argument("--json", action="store_true", help="print the figures as JSON")
    zs.set_defaults(func=_cmd_clip_zeroshot)

    cfg = sub.add_parser("config", help="print a resolved configuration as YAML")
    cfg.add_argument("-c", "--config", required=True, help="YAML config file")
    cfg.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.seed=3")
    cfg.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # the user's input: say what is wrong, no traceback
        print(f"vireid {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
