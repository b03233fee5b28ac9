"""Writing to disk without destroying anything: new content goes into a temporary sibling that is renamed into place,
permissions follow the user's umask, and a target that holds what this project did not write is refused.

Every writer of the project (model export, checkpoints, data caches) goes through these functions, so that an
interruption leaves either the old content or the new, never a mix, and never deletes a file it did not create.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Collection, Optional, Union

PathLike = Union[str, Path]


class TargetError(ValueError):
    """A target path that holds something this project must not replace; the message says what to do."""


def temp_sibling(target: PathLike, directory: bool = False) -> Path:
    """A new, unique, hidden path beside ``target`` (same file system, so it can be renamed onto it). With
    ``directory`` it is created as a directory with the permissions of the user's umask (``mkdtemp`` would give
    0700, which other users and containers cannot read)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        if not directory:
            if not path.exists():
                return path
            continue
        try:
            os.mkdir(path, 0o777)  # the umask applies
            return path
        except FileExistsError:
            continue


def follow_umask(path: PathLike) -> None:
    """Give a file the permissions a plain ``open`` would have given it (some writers, safetensors among them,
    create files readable by their owner only)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write_file(path: PathLike, write: Callable[[Path], None], fsync: bool = True) -> Path:
    """Call ``write(tmp)`` to write a temporary file beside ``path``, then rename it onto ``path`` in one step: an
    interruption leaves the previous file intact and no temporary file behind."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def check_directory_target(
    target: PathLike, own: Collection[str] = (), overwrite: bool = False, kind: str = "perceiver model",
    force_hint: str = "pass --force (overwrite=True in Python)", writes: Collection[str] = (),
) -> list:
    """Raise :class:`TargetError` unless :func:`replace_directory` may write ``target`` (see there); returns the
    names of its entries. Call it before slow work so that a refusal comes first.

    :param writes: names the new content will have, if known: one that exists and is not in ``own`` is refused.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise TargetError(f"{target} exists and is not a directory; choose another path")
    entries = sorted(os.listdir(target)) if target.exists() else []
    if entries and not overwrite:
        if own:
            raise TargetError(f"{target} already holds a {kind}; {force_hint} to replace it")
        raise TargetError(f"{target} is not empty and is not a {kind}; choose another path or {force_hint}")
    _refuse_clash(target, sorted(set(writes) & set(entries) - set(own)))
    return entries


def _refuse_clash(target: Path, names: Collection[str]) -> None:
    if names:
        raise TargetError(f"{target / next(iter(names))} was not written by perceiver; refusing to replace it")


def replace_directory(
    target: PathLike,
    write: Callable[[Path], None],
    own: Collection[str] = (),
    overwrite: bool = False,
    kind: str = "perceiver model",
    force_hint: str = "pass --force (overwrite=True in Python)",
) -> Path:
    """Write ``target`` as a whole: ``write(tmp)`` fills a new directory beside it, which then takes its place in
    one rename, so an interruption leaves the old ``target`` intact.

    :param own: names of the entries in ``target`` that an earlier write of the same kind made (for a model
        export: ``config.json`` and ``model.safetensors``, if its ``config.json`` is one of ours); these are
        replaced. Every other entry is kept, linked into the new directory before the swap.
    :param overwrite: needed when ``target`` holds anything. Without it a previous write of the same kind, or a
        directory with other content, is refused. Even with it, an entry that the new content would replace but
        that is not in ``own`` is refused: a file this project did not write is never overwritten.
    """
    target = Path(target)
    entries = check_directory_target(target, own, overwrite, kind, force_hint)
    foreign = [name for name in entries if name not in own]
    tmp = temp_sibling(target, directory=True)
    try:
        write(tmp)
        _refuse_clash(target, sorted(set(os.listdir(tmp)) & set(foreign)))
        for name in foreign:
            _link_into(target / name, tmp / name)
        if not target.exists() or not entries:
            os.replace(tmp, target)  # onto nothing, or onto an empty directory
        else:
            _exchange(tmp, target)  # tmp now holds the old content
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _link_into(source: Path, destination: Path) -> None:
    """Make ``source`` (a file, directory or symlink) appear at ``destination`` without moving it: hard links where
    the file system allows them, copies where it does not. The original stays where it is until the swap."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
    elif source.is_dir():
        shutil.copytree(source, destination, symlinks=True, copy_function=link)
    else:
        link(str(source), str(destination))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2() -> Optional[Callable]:
    name = ctypes.util.find_library("c")
    try:
        function = getattr(ctypes.CDLL(name, use_errno=True), "renameat2")
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``). Where the system cannot, two renames
    with the old directory parked beside ``b`` for the instant between them."""
    function = _renameat2()
    if function is not None:
        if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(b))
    parked = temp_sibling(b)
    os.rename(b, parked)
    try:
        os.rename(a, b)
    except BaseException:
        os.rename(parked, b)
        raise
    os.rename(parked, a)
