"""The ``vireid`` command: a thin layer over the library.

    vireid data synth --layout sysu --root DIR [--ids N] [--seed S]
    vireid data check sysu --root DIR [-o mode=indoor]
    vireid evaluate --features FILE --protocol sysu [--json]
    vireid config -c CONFIG [key=value ...]
    vireid train -c CONFIG [key=value ...]          (multi-GPU: torchrun --nproc_per_node N -m vireid train ...)
    vireid eval -c CONFIG --ckpt PATH [key=value ...]
    vireid demo [--workdir runs/demo]
    vireid weights fetch ViT-B-16 --to DIR
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
    from vireid.data.datasets import dataset_stats, format_stats, load_dataset

    data = load_dataset(args.name, args.root, **_parse_options(args.option))
    stats = dataset_stats(data)
    print(json.dumps(stats, indent=2, default=str) if args.json else format_stats(stats))
    return 0


def _cmd_evaluate(args) -> int:
    from vireid.evaluation.evaluator import REPORTED_RANKS, evaluate_feature_file

    metrics = evaluate_feature_file(args.features, args.protocol)
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
    from vireid.config import load_config
    from vireid.engine.distributed import is_main_process
    from vireid.runner import train

    summary = train(load_config(args.config, args.overrides))
    if is_main_process() and summary:
        _print_summary({k: v for k, v in summary.items() if k != "splits"}, args.json)
    return 0


def _cmd_eval(args) -> int:
    from vireid.runner import evaluate_checkpoint

    summary = evaluate_checkpoint(args.ckpt, args.config, args.overrides)
    _print_summary(summary if args.json else {k: v for k, v in summary.items() if k != "splits"},
                   args.json)
    return 0


def _cmd_demo(args) -> int:
    from vireid.runner import demo

    demo(args.workdir, seed=args.seed, overrides=args.overrides)
    return 0


def _cmd_weights_fetch(args) -> int:
    from vireid.models.weights import fetch_weights

    print(fetch_weights(args.name, args.to))
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
    ev.add_argument("--json", action="store_true",
                    help="print one JSON object: cmc (ranks 1..20), mAP, mINP as fractions")
    ev.set_defaults(func=_cmd_evaluate)

    tr = sub.add_parser("train", help="train a method (multi-GPU: torchrun ... -m vireid train)")
    tr.add_argument("-c", "--config", required=True, help="YAML config file")
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.root=/data/SYSU-MM01")
    tr.add_argument("--json", action="store_true", help="print the final evaluation as JSON")
    tr.set_defaults(func=_cmd_train)

    evc = sub.add_parser("eval", help="evaluate a checkpoint under its dataset's protocol")
    evc.add_argument("--ckpt", required=True, help="checkpoint written by vireid train")
    evc.add_argument("-c", "--config", default=None,
                     help="YAML config (default: the config stored in the checkpoint)")
    evc.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.root=/elsewhere")
    evc.add_argument("--json", action="store_true", help="print per-split results as JSON")
    evc.set_defaults(func=_cmd_eval)

    dm = sub.add_parser("demo", help="synthetic people -> train a tiny CLIP-ReID on CPU -> evaluate")
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
