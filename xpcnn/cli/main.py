"""The ``xpcnn`` command: ``train``, ``evaluate``, ``predict``, ``info`` and ``bench``."""

from __future__ import annotations

import argparse
import re
import sys

from xpcnn import __version__, enable_wide_vectors
from xpcnn.cli import bench, evaluate, info, train
from xpcnn.cli.common import one_line_warnings
from xpcnn.errors import BackendUnavailableError, DeviceUnavailableError, XpcnnError


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (what was wrong, and where to look) instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xpcnn", description="Train CNNs on any Array API backend.")
    parser.add_argument("--version", action="version", version=f"xpcnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_parser(sub)
    evaluate.add_parsers(sub)
    info.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: one clear line on stderr and a non-zero exit for bad input, never a traceback."""
    args = build_parser().parse_args(argv)
    enable_wide_vectors()  # process-wide numba setting: the command owns its process (see its docstring)
    try:
        with one_line_warnings(f"xpcnn {args.command}"):
            return int(args.run(args) or 0)
    except (XpcnnError, ValueError, OSError) as exc:
        message = str(exc).strip() or type(exc).__name__
        if isinstance(exc, (DeviceUnavailableError, BackendUnavailableError)):  # advice written for Python callers
            message = re.sub(r"\b(device|backend)='([^']*)'", r"--\1 \2", message)
        print(f"xpcnn {args.command}: error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _out_of_memory(exc):
            raise
        print(f"xpcnn {args.command}: error: {_out_of_memory_advice(args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xpcnn {args.command}: interrupted", file=sys.stderr)
        return 130


def _out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or a GPU library's out-of-memory error (torch's OutOfMemoryError is a RuntimeError)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def _out_of_memory_advice(args: argparse.Namespace) -> str:
    """What ran out, and what to do about it, in one line."""
    batch_size = getattr(args, "batch_size", None)
    if batch_size is not None:
        return f"out of memory at batch size {batch_size}: pass a smaller --batch-size"
    return "out of memory: close other programs, or use a smaller model or fewer images"


if __name__ == "__main__":
    sys.exit(main())
