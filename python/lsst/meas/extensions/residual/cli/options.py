"""Command-line options shared by the subcommands that run a model package."""

from __future__ import annotations

__all__ = ["add_inference_options"]

import argparse


def add_inference_options(parser: argparse.ArgumentParser, figure: str) -> None:
    """Add the network-inference, plotting and overwrite options.

    Parameters
    ----------
    parser
        The subcommand's parser.
    figure
        Name of the figure ``--no-plot`` skips, for its help text.
    """
    parser.add_argument("--score-threshold", type=float, default=None, help="default: the package's")
    parser.add_argument(
        "--tile-size", type=int, default=None, help="tile side, multiple of 32 (default: package's)"
    )
    parser.add_argument(
        "--overlap", type=int, default=None, help="tile overlap in pixels (default: package's)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per network call")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--no-plot", action="store_true", help=f"skip {figure}")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
