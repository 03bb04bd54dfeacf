"""Writing files that a remote party names: paths confined to one folder, no silent overwrite, no half-written file.

Used by the headless client (outputs named by the ComfyUI server) and the model downloader.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath


class UnsafePath(ValueError):
    """A remote name that would put a file outside the chosen folder."""


def confined_path(root: Path, *names: str) -> Path:
    """root/names..., refusing names that are absolute, contain `..` or a NUL, or resolve (symlinks followed) outside
    root.

    Both '/' and '\\' separate components, so a server cannot slip a Windows path past a POSIX check or vice versa.
    `root` itself is resolved first: a root that is a symlink is followed (the caller chose it).
    """
    parts = [part for name in names for part in _plain_parts(root, name)]
    if not parts:
        raise UnsafePath(f"refusing an empty file name inside {root}")
    root = Path(root).resolve()
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root):
        raise UnsafePath(f"refusing {'/'.join(parts)!r}: it resolves to {target.resolve()}, outside {root}")
    return target


def model_file_path(models_root: Path, folder: str, name: str) -> Path:
    """Where a workflow's declared model file `name` of the models/ subfolder `folder` is written.

    `folder` must be one plain folder name ('diffusion_models', 'loras', ...). That folder is the user's: when it is
    a symlink (a large disk linked in), the file goes where it leads. `name` may hold subfolders but must stay inside
    that folder: no absolute path, no `..`, and no symlink below the folder that leads out of it.
    """
    parts = _plain_parts(models_root, folder)
    if len(parts) != 1:
        raise UnsafePath(f"refusing the models folder {folder!r}: expected one folder name of {models_root}, such "
                         f"as 'diffusion_models'")
    return confined_path(Path(models_root) / parts[0], name)


def _plain_parts(root: Path, name: str) -> list[str]:
    """The components of a relative name ('/' or '\\' separated, without '' and '.'); UnsafePath for an absolute
    path, a `..` or a NUL."""
    if not isinstance(name, str) or "\x00" in name:
        raise UnsafePath(f"refusing the name {name!r}: not a plain file name")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive or name.startswith(("/", "\\")):
        raise UnsafePath(f"refusing the absolute path {name!r}: files are only written inside {root}")
    pieces = [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]
    if ".." in pieces:
        raise UnsafePath(f"refusing {name!r}: '..' would leave {root}")
    return pieces


def numbered_name(path: Path, index: int) -> Path:
    """'clip.mp4', 2 -> 'clip (2).mp4' (ComfyUI's own pattern for uploads with a taken name)."""
    return path.with_name(f"{path.stem} ({index}){path.suffix}")


def place_file(temporary: Path, target: Path, overwrite: bool = False) -> Path:
    """Move a finished temporary file to `target` in one step; returns where it landed.

    overwrite=False never replaces an existing file: a taken name becomes 'name (1).ext', 'name (2).ext', ...
    The final name appears only with complete contents (a hard link, or a rename on file systems without them).
    """
    if overwrite:
        os.replace(temporary, target)
        return target
    candidate, index = target, 0
    while True:
        try:
            os.link(temporary, candidate)  # fails atomically when the name is taken
        except FileExistsError:
            index += 1
            candidate = numbered_name(target, index)
            continue
        except OSError:  # no hard links on this file system: check, then rename
            if candidate.exists():
                index += 1
                candidate = numbered_name(target, index)
                continue
            os.replace(temporary, candidate)
            return candidate
        temporary.unlink()
        return candidate
