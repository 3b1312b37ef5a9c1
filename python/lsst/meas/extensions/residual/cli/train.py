"""``residual-detectron train``: generate training data, train, write a model package."""

from __future__ import annotations

import argparse
import logging

from .options import add_workers_option, at_least

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the Mask R-CNN detector and write a model package",
        description=(
            "Generate (or reuse) the cached simulated training and validation sets, train the Mask R-CNN, "
            "validate after each epoch and write OUT/model.zip. An interrupted run resumes from "
            "OUT/checkpoint.pt when started again with the same config."
        ),
    )
    parser.add_argument("--config", required=True, help="training YAML file (see config/train_*.yaml)")
    parser.add_argument("--out", required=True, help="output directory (checkpoints, history, model.zip)")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    parser.add_argument("--cache-dir", default=None, help="override the config's dataset cache directory")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's number of epochs")
    add_workers_option(parser, "simulate the training and validation scenes and run their first pass")
    parser.add_argument(
        "--time-limit",
        type=at_least(0, float),
        default=None,
        metavar="MINUTES",
        help="stop at the end of the epoch that passes this many minutes of the run (data included) and "
        "write the package from the best epoch so far; the same command without it resumes (a batch "
        "job's wall-time limit)",
    )
    parser.add_argument(
        "--loader-workers",
        type=at_least(0),
        default=0,
        help="DataLoader processes that make the batches ahead of the steps (num_workers; default 0, in "
        "this process; the weights do not depend on it, and a GPU waits less)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..training import load_train_config, train

    config = load_train_config(args.config)
    overrides = {"device": args.device, "cache_dir": args.cache_dir, "epochs": args.epochs}
    config = config.replace(**{key: value for key, value in overrides.items() if value is not None})
    path = train(
        config,
        args.out,
        restart=args.restart,
        progress=not args.no_progress,
        workers=args.workers,
        time_limit=None if args.time_limit is None else 60.0 * args.time_limit,
        loader_workers=args.loader_workers,
    )
    _log.info("Wrote model package %s", path)
