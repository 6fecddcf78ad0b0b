"""``xpcnn bench`` (filled in by the benchmark harness)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time training and inference against native PyTorch")
    p.set_defaults(run=lambda args: 0)
