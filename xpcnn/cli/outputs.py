"""The files ``xpcnn train`` writes into its output folder, checked before the run starts.

Every file a run writes is named in :data:`FILES`. Before the first step, :func:`prepare` makes sure that
none of them is a symbolic link or a folder (a write would go through the link, or fail at the end of an
epoch), that a new run would not replace another run's files without ``--force``, and that a resume would
not overwrite progress further along than its checkpoint. It removes the temporary files that a killed run
left behind (checkpoints are written to ``<name>.<random>.tmp`` and renamed, see
:func:`xpcnn.backend.host.save_arrays`); the caller holds the folder's lock, so no other run is writing them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from xpcnn.backend import host
from xpcnn.checkpoint import Checkpoint, load_checkpoint
from xpcnn.errors import CheckpointError, XpcnnError

#: What a run writes into its folder.
FILES = ("last.npz", "best.npz", "history.jsonl", "history.png", "recall.png")


def prepare(out: Path, resume_from: Checkpoint | None = None, force: bool = False) -> None:
    """Check ``out`` before a run writes into it (see the module docstring); with ``force``, delete the files of
    a run that is not being resumed, and symbolic links in their place (never what a link points to).

    Raises :class:`XpcnnError` in one line naming the file and the fix.
    """
    if not os.access(out, os.W_OK | os.X_OK):
        raise XpcnnError(f"cannot write into {out} (permission denied); pass another --out")
    for name in FILES:
        path = out / name
        if path.is_symlink():
            if not force:
                raise XpcnnError(f"{path} is a symbolic link; xpcnn writes no file through a link: remove it, "
                                 "or pass --force (which removes the link, not what it points to), or another --out")
            path.unlink()
        elif path.exists() and not path.is_file():
            raise XpcnnError(f"{path} is not a file, and the run would write its {name} there; move it away, "
                             "or pass another --out")
    removed = remove_stale_temporaries(out)
    if removed:
        print(f"removed {removed} unfinished temporary file(s) in {out} left by an earlier run that was killed",
              file=sys.stderr)
    existing = [name for name in FILES if (out / name).exists()]
    if resume_from is None or not _same_folder(resume_from, out):
        if existing and not force:
            fix = (f"pass --resume {out / 'last.npz'} to continue the run there, --force to replace it, or another "
                   "--out" if (out / "last.npz").is_file() else "pass --force to replace them, or another --out")
            raise XpcnnError(f"{out} already holds {', '.join(existing)}; {fix}")
        for name in existing if force else ():
            (out / name).unlink()
        return
    last = out / "last.npz"
    if last.is_file() and not last.samefile(resume_from.path):
        ahead = _progress(last)
        if ahead is not None and ahead > _progress_of(resume_from):
            raise XpcnnError(f"resuming from {resume_from.path} ({_describe(resume_from)}) would overwrite {last}, "
                             f"which is further along ({_describe(load_checkpoint(last))}); resume from {last}, or "
                             f"pass --out NEW to branch off from {resume_from.path.name} there")


def adopt(out: Path, checkpoint: Checkpoint) -> None:
    """Make ``out`` hold the resumed run's record before training goes on: ``history.jsonl`` rewritten from the
    checkpoint's history (so an epoch whose line a kill lost is back, and lines past the checkpoint are gone),
    and, for a run continued into a new folder, the old folder's ``best.npz`` copied when it is not ahead of
    the checkpoint."""
    lines = "".join(json.dumps(record) + "\n" for record in checkpoint.meta.get("history") or [])
    history = out / "history.jsonl"
    if not history.is_file() or history.read_text(encoding="utf-8", errors="replace") != lines:
        write_text(history, lines)
    source = checkpoint.path.parent / "best.npz"
    if not _same_folder(checkpoint, out) and source.is_file() and not (out / "best.npz").exists():
        best = _progress(source)
        if best is not None and best <= _progress_of(checkpoint):
            copy_file(source, out / "best.npz")


def remove_stale_temporaries(out: Path) -> int:
    """Delete the ``<file>.<random>.tmp`` files of :data:`FILES` in ``out``; returns how many."""
    removed = 0
    for path in out.glob("*.tmp"):
        if any(path.name.startswith(name + ".") for name in FILES) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it: a link at ``path`` is replaced,
    never followed)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        host.fsync_replace(Path(tmp), path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically."""
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        host.fsync_replace(Path(tmp), target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _same_folder(checkpoint: Checkpoint, out: Path) -> bool:
    return checkpoint.path is not None and out.exists() and checkpoint.path.parent.resolve() == out.resolve()


def _progress_of(checkpoint: Checkpoint) -> int:
    trainer: Any = checkpoint.meta.get("trainer")
    return int(trainer.get("global_step", 0)) if isinstance(trainer, dict) else 0


def _progress(path: Path) -> int | None:
    """The training steps recorded in the checkpoint at ``path``, or None if it cannot be read."""
    try:
        return _progress_of(load_checkpoint(path))
    except (CheckpointError, TypeError, ValueError):
        return None


def _describe(checkpoint: Checkpoint) -> str:
    trainer: Any = checkpoint.meta.get("trainer") or {}
    epoch, batch = int(trainer.get("epoch", 0)), int(trainer.get("batch_in_epoch", 0))
    return f"{epoch} epoch(s)" + (f" and {batch} batch(es)" if batch else "") + " done"
