"""Resumable, checked downloads of model files.

A file is fetched into `<name>.part` beside its final name; an interrupted download resumes from there with an HTTP
Range request. The size is checked against what the source declares (Content-Length / Content-Range, or Hugging
Face's X-Linked-Size on the redirect), the sha256 against a known hash or the one the source publishes (Hugging Face
sends an LFS file's sha256 as X-Linked-ETag on the redirect to its CDN, and some servers as the ETag itself), and only
a complete, verified file is renamed to the final name. Neither name is followed when it is a symbolic link, and
the final name is never replaced: a file, or a link, that took it meanwhile is kept. Standard library only.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

CHUNK = 1 << 20
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
USER_AGENT = "wan-animate-downloader"


class DownloadError(RuntimeError):
    """A download that failed or did not verify; the message says whether running again resumes it."""


@dataclass
class SourceFacts:
    """What the server said about the file, gathered over every redirect hop."""

    size: int | None = None
    sha256: str | None = None
    hops: list[str] = field(default_factory=list)

    def learn(self, headers) -> None:
        for name in ("X-Linked-ETag", "ETag"):
            value = (headers.get(name) or "").strip().removeprefix("W/").strip('"').lower()
            if self.sha256 is None and SHA256_HEX.match(value):
                self.sha256 = value
        linked_size = headers.get("X-Linked-Size")
        if linked_size and linked_size.isdigit():
            self.size = int(linked_size)


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib does, noting each hop's size and hash headers (HF puts them on the 302)."""

    def __init__(self, facts: SourceFacts):
        self.facts = facts

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.facts.learn(headers)
        self.facts.hops.append(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def content_range_total(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/200' -> (100, 200); 'bytes */200' -> (None, 200); unparsable -> (None, None)."""
    match = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def human_size(count: float) -> str:
    """12345678 -> '12.3 MB' (decimal units, as download sites state sizes)."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


class ProgressBar:
    """One status line on stderr: 'name  42.0%  1.1 GB / 2.6 GB  35.2 MB/s' (a line per 10% when not a terminal)."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.interactive = getattr(self.stream, "isatty", lambda: False)()
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.last_decile = -1
        self.last_done = None
        self.first = None

    def __call__(self, done: int, total: int | None) -> None:
        if done == self.last_done:
            return
        self.last_done = done
        now = time.monotonic()
        if self.first is None:
            self.first = done
        finished = total is not None and done >= total
        percent = 100.0 * done / total if total else None
        if self.interactive:
            if now - self.last_draw < 0.2 and not finished:
                return
        else:
            decile = int(percent // 10) if percent is not None else done // 10**9
            if decile == self.last_decile and not finished:
                return
            self.last_decile = decile
        self.last_draw = now
        rate = human_size((done - self.first) / max(now - self.started, 1e-3)) + "/s"
        size = f"{human_size(done)} / {human_size(total)}" if total else human_size(done)
        text = f"  {self.label}  " + (f"{percent:5.1f}%  " if percent is not None else "") + f"{size}  {rate}"
        print(text, end="\r" if self.interactive and not finished else "\n", file=self.stream, flush=True)


def download_file(
    url: str,
    target: Path,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download `url` to `target` through `target.part`, resuming a partial file; returns `target`.

    `sha256`/`size` given by the caller win over what the server publishes. Raises DownloadError when the transfer
    breaks (the .part is kept: running again resumes), when the size or hash differs from the declared one (the .part
    is removed), or when `target` already exists, as a file or a symbolic link (never overwritten or written
    through), or when `target.part` is not a regular file (a symbolic link is not followed).
    """
    target = Path(target)
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http and https downloads are supported")
    if target.is_symlink():
        raise DownloadError(f"{target} is a symbolic link (to {os.readlink(target)}); not downloading through it")
    if target.exists():
        raise DownloadError(f"{target} already exists; not downloading over it")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    _check_part(part)
    facts = SourceFacts()
    response, have = _open_resumed(url, part, facts, timeout)
    expected_size = size or facts.size
    expected_hash = (sha256 or facts.sha256 or "").lower() or None
    with response:
        total = _response_total(response, have)
        if expected_size is None:
            expected_size = total
        elif total is not None and total != expected_size:
            raise DownloadError(f"{url}: the server sends {total} bytes, but the file is declared as {expected_size}")
        _check_free_space(part, have, expected_size)
        actual = _stream(response, part, have, expected_size, progress, url)
    got = part.stat().st_size
    if expected_size is not None and got != expected_size:
        part.unlink()
        raise DownloadError(f"{url}: got {got} bytes, expected {expected_size}; removed {part.name}")
    if expected_hash is not None:
        if actual != expected_hash:
            part.unlink()
            raise DownloadError(f"{url}: sha256 {actual} does not match the published {expected_hash}; "
                                f"removed {part.name}")
    _move_without_replacing(part, target)
    return target


def _check_part(part: Path) -> None:
    """Refuse a `.part` that is anything but a regular file of its own (or absent): a symbolic link would be written
    through, and a hard link shares its bytes with another file, which resuming would append to."""
    try:
        facts = part.lstat()
    except FileNotFoundError:
        return
    mode = facts.st_mode
    if stat.S_ISLNK(mode):
        raise DownloadError(f"{part} is a symbolic link (to {os.readlink(part)}); expected a regular file or "
                            f"nothing there. Remove it and run again")
    if not stat.S_ISREG(mode):
        raise DownloadError(f"{part} is not a regular file; expected a partial download or nothing there. "
                            f"Remove it and run again")
    _check_single_link(part, facts)


def _check_single_link(part: Path, facts: os.stat_result) -> None:
    if facts.st_nlink > 1:
        raise DownloadError(f"{part} is a hard link shared with {facts.st_nlink - 1} other name(s); expected a "
                            f"partial download of its own. Remove it and run again")


def _open_part(part: Path, mode: str):
    """Open `part` for "rb", "ab" or "wb" without following a symbolic link put under its name since the check."""
    flags = {"rb": os.O_RDONLY, "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "wb": os.O_WRONLY | os.O_CREAT}[mode]
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    if getattr(os, "O_NOFOLLOW", 0) == 0:  # no O_NOFOLLOW (Windows): the check just before is the guard
        _check_part(part)
    try:
        fd = os.open(part, flags, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            _check_part(part)  # names the link
        raise
    facts = os.fstat(fd)
    try:
        if not stat.S_ISREG(facts.st_mode):
            raise DownloadError(f"{part} is not a regular file; expected a partial download or nothing there. "
                                f"Remove it and run again")
        _check_single_link(part, facts)
    except DownloadError:
        os.close(fd)
        raise
    if mode == "wb":
        os.ftruncate(fd, 0)  # after the checks: O_TRUNC would empty a file before they ran
    return os.fdopen(fd, mode)


def _move_without_replacing(part: Path, target: Path) -> None:
    """Give the verified `part` the name `target`, atomically, failing if anything (a link included) holds it."""
    appeared = DownloadError(f"{target} appeared while downloading; the download stays in {part}")
    try:
        os.link(part, target)  # fails when the name is taken, unlike rename
    except FileExistsError:
        raise appeared from None
    except OSError:  # a file system without hard links: check, then rename (a small window, not none)
        if os.path.lexists(target):
            raise appeared from None
        os.replace(part, target)
        return
    part.unlink()


def _open_resumed(url: str, part: Path, facts: SourceFacts, timeout: float):
    """The response to a GET resuming after `part`'s bytes, and how many of them the response continues from."""
    opener = urllib.request.build_opener(_RecordingRedirects(facts))
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        facts.learn(error.headers)
        if error.code == 416 and have:  # nothing after `have`: the .part is already whole (verified by the caller)
            _, total = content_range_total(error.headers.get("Content-Range"))
            if total == have:
                return _EmptyResponse(have), have
            part.unlink()
            raise DownloadError(f"{url}: the partial file {part.name} is larger than the source; removed it, "
                                f"run again") from error
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"{url}: {getattr(error, 'reason', error)}") from error
    facts.learn(response.headers)
    if response.status == 206:
        start, _ = content_range_total(response.headers.get("Content-Range"))
        if start != have:
            response.close()
            raise DownloadError(f"{url}: asked to resume at byte {have}, the server sent from {start}")
        return response, have
    return response, 0  # a 200 answer is the whole file: start over


class _EmptyResponse:
    """Stands in for the body of a 416 answer to a resume of a complete file."""

    status = 206

    def __init__(self, total: int):
        self.headers = {"Content-Range": f"bytes */{total}"}

    def read(self, _size: int = -1) -> bytes:
        return b""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _response_total(response, have: int) -> int | None:
    """The whole file's size according to this response."""
    if response.status == 206:
        return content_range_total(response.headers.get("Content-Range"))[1]
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _check_free_space(part: Path, have: int, total: int | None) -> None:
    if total is None:
        return
    free = shutil.disk_usage(part.parent).free
    if total - have > free:
        raise DownloadError(f"{part.parent} has {human_size(free)} free; {part.name[:-5]} needs "
                            f"{human_size(total - have)} more")


def _stream(response, part: Path, have: int, total: int | None, progress, url: str) -> str:
    """Append the body to `part` (or rewrite it when `have` is 0); returns the sha256 of the whole part file.

    The bytes already in `part` are hashed first, so the file is read once. A broken transfer keeps what arrived.
    """
    digest = hashlib.sha256()
    if have:
        with _open_part(part, "rb") as file:
            while chunk := file.read(CHUNK):
                digest.update(chunk)
    done = have
    with _open_part(part, "ab" if have else "wb") as file:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (http.client.IncompleteRead, OSError) as error:
                raise DownloadError(f"{url}: the transfer broke after {done} bytes ({error.__class__.__name__}); "
                                    f"run again to resume from {part}") from error
            if not chunk:
                break
            file.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    if total is not None and done < total:  # urllib returns b"" when the connection closes early
        raise DownloadError(f"{url}: the transfer broke after {done} of {total} bytes; run again to resume from "
                            f"{part}")
    if progress is not None:
        progress(done, total)
    return digest.hexdigest()
