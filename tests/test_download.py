"""wan_animate.download against a loopback http.server serving fake model files: resume after an interrupted
transfer, size and sha256 checks (given, or published the way Hugging Face does), nothing left under the final name."""
from __future__ import annotations

import hashlib
import io
import os
import shutil

import pytest

from file_server import FileServer, Served
from wan_animate import download
from wan_animate.download import DownloadError, ProgressBar, content_range_total, download_file, human_size

BODY = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def files():
    with FileServer() as server:
        yield server


def test_an_interrupted_download_resumes_with_a_range_request(files, tmp_path):
    files.files["/model.safetensors"] = Served(BODY, cut_after=3000, headers={"ETag": f'"{SHA}"'})
    target = tmp_path / "models" / "vae" / "model.safetensors"
    with pytest.raises(DownloadError, match=r"broke after 3000 of 10240 bytes; run again to resume"):
        download_file(files.url + "/model.safetensors", target)
    part = target.with_name("model.safetensors.part")
    assert not target.exists() and part.read_bytes() == BODY[:3000]
    seen = []
    assert download_file(files.url + "/model.safetensors", target, progress=lambda d, t: seen.append((d, t))) == target
    assert target.read_bytes() == BODY and not part.exists()
    assert files.requests == [("/model.safetensors", None), ("/model.safetensors", "bytes=3000-")]
    assert seen[-1] == (10240, 10240) and seen[0][0] > 3000


def test_a_server_that_ignores_range_restarts_the_file(files, tmp_path):
    files.files["/m.bin"] = Served(BODY, honour_range=False)
    target = tmp_path / "m.bin"
    target.with_name("m.bin.part").write_bytes(b"stale bytes from another file")
    download_file(files.url + "/m.bin", target)
    assert target.read_bytes() == BODY


def test_a_complete_part_file_is_verified_and_renamed(files, tmp_path):
    files.files["/m.bin"] = Served(BODY, headers={"ETag": f'"{SHA}"'})
    target = tmp_path / "m.bin"
    target.with_name("m.bin.part").write_bytes(BODY)
    download_file(files.url + "/m.bin", target)
    assert target.read_bytes() == BODY and files.requests == [("/m.bin", "bytes=10240-")]


def test_wrong_size_is_refused_and_nothing_is_left_under_the_final_name(files, tmp_path):
    files.files["/m.bin"] = Served(BODY)
    target = tmp_path / "m.bin"
    with pytest.raises(DownloadError, match=r"sends 10240 bytes, but the file is declared as 20000"):
        download_file(files.url + "/m.bin", target, size=20000)
    assert not target.exists()
    files.files["/hf"] = Served(b"", redirect_to="/m.bin", headers={"X-Linked-Size": "9999"})
    with pytest.raises(DownloadError, match=r"declared as 9999"):
        download_file(files.url + "/hf", target)
    assert not target.exists()


@pytest.mark.parametrize("how", ["given", "etag", "hf_redirect"])
def test_wrong_hash_is_refused_and_the_part_removed(files, tmp_path, how):
    wrong = hashlib.sha256(b"another file").hexdigest()
    files.files["/m.bin"] = Served(BODY, headers={"ETag": f'"{wrong}"'} if how == "etag" else {})
    files.files["/resolve/m.bin"] = Served(b"", redirect_to="/m.bin", headers={"X-Linked-ETag": f'"{wrong}"'})
    url = files.url + ("/resolve/m.bin" if how == "hf_redirect" else "/m.bin")
    target = tmp_path / "m.bin"
    with pytest.raises(DownloadError, match=rf"sha256 {SHA} does not match the published {wrong}"):
        download_file(url, target, sha256=wrong if how == "given" else None)
    assert not target.exists() and not target.with_name("m.bin.part").exists()


def test_the_published_hash_is_checked_through_a_redirect(files, tmp_path):
    """Hugging Face: /resolve/... answers 302 with the LFS sha256 in X-Linked-ETag; the CDN's own ETag differs."""
    files.files["/m.bin"] = Served(BODY, headers={"ETag": '"d41d8cd98f00b204e9800998ecf8427e"'})
    files.files["/resolve/m.bin"] = Served(b"", redirect_to="/m.bin",
                                           headers={"X-Linked-ETag": f'"{SHA}"', "X-Linked-Size": str(len(BODY))})
    target = tmp_path / "m.bin"
    download_file(files.url + "/resolve/m.bin", target)
    assert target.read_bytes() == BODY


def test_an_existing_file_is_never_replaced_and_http_errors_are_named(files, tmp_path):
    target = tmp_path / "m.bin"
    target.write_bytes(b"mine")
    with pytest.raises(DownloadError, match="already exists"):
        download_file(files.url + "/m.bin", target)
    assert target.read_bytes() == b"mine"
    with pytest.raises(DownloadError, match=r"/missing.bin: HTTP 404"):
        download_file(files.url + "/missing.bin", tmp_path / "missing.bin")


def test_content_range_parsing():
    assert content_range_total("bytes 100-199/200") == (100, 200)
    assert content_range_total("bytes */200") == (None, 200)
    assert content_range_total("items 1-2/3") == (None, None)


def test_progress_bar_prints_a_line_per_tenth_when_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar("vae.safetensors", stream)
    for done in range(0, 10241, 512):
        bar(done, 10240)
    lines = stream.getvalue().splitlines()
    bar(10240, 10240)  # the final report repeats the last count: no second line
    assert len(lines) == 11 and len(stream.getvalue().splitlines()) == 11
    assert lines[-1].startswith("  vae.safetensors  100.0%  10.2 kB / 10.2 kB  ")


def test_only_http_sources_and_enough_free_space(files, tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("not a model")
    with pytest.raises(DownloadError, match="only http and https downloads are supported"):
        download_file(secret.as_uri(), tmp_path / "models" / "m.bin")
    files.files["/m.bin"] = Served(BODY)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**6, 10**6 - 4096, 4096))
    with pytest.raises(DownloadError, match=r"has 4\.1 kB free; m\.bin needs 10\.2 kB more"):
        download_file(files.url + "/m.bin", tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


def test_human_size():
    assert [human_size(n) for n in (999, 1000, 20_500_000, 35.2e9, 2e12)] == \
        ["999 B", "1.0 kB", "20.5 MB", "35.2 GB", "2000.0 GB"]


@pytest.mark.parametrize("dangling", [False, True])
def test_a_part_symlink_is_not_followed(files, tmp_path, dangling):
    """A `<name>.part` that is a symbolic link (to a user file, or to nothing yet) is refused, not written through."""
    files.files["/m.bin"] = Served(BODY)
    elsewhere = tmp_path / "elsewhere" / "user.bin"
    elsewhere.parent.mkdir()
    if not dangling:
        elsewhere.write_bytes(b"the user's own file")
    target = tmp_path / "models" / "m.bin"
    target.parent.mkdir()
    part = target.with_name("m.bin.part")
    part.symlink_to(elsewhere)
    with pytest.raises(DownloadError, match=r"m\.bin\.part is a symbolic link .*; expected a regular file"):
        download_file(files.url + "/m.bin", target)
    assert part.is_symlink() and not target.exists() and files.requests == []
    if dangling:
        assert not elsewhere.exists()
    else:
        assert elsewhere.read_bytes() == b"the user's own file"


def test_a_part_hard_linked_to_a_user_file_is_refused_and_the_file_kept(files, tmp_path):
    """Resuming appends to the .part: through a hard link that would grow (and a restart would empty) another file."""
    files.files["/m.bin"] = Served(BODY)
    user_file = tmp_path / "user.bin"
    user_file.write_bytes(BODY[:10])  # looks like a partial download of the same file
    target = tmp_path / "models" / "m.bin"
    target.parent.mkdir()
    part = target.with_name("m.bin.part")
    os.link(user_file, part)
    with pytest.raises(DownloadError, match=r"m\.bin\.part is a hard link shared with 1 other name"):
        download_file(files.url + "/m.bin", target)
    assert user_file.read_bytes() == BODY[:10] and not target.exists() and files.requests == []


@pytest.mark.parametrize("dangling", [False, True])
def test_a_target_symlink_is_neither_written_through_nor_replaced(files, tmp_path, dangling):
    files.files["/m.bin"] = Served(BODY)
    elsewhere = tmp_path / "elsewhere.bin"
    if not dangling:
        elsewhere.write_bytes(b"the user's own file")
    target = tmp_path / "m.bin"
    target.symlink_to(elsewhere)
    with pytest.raises(DownloadError, match=r"m\.bin (already exists|is a symbolic link)"):
        download_file(files.url + "/m.bin", target)
    assert target.is_symlink() and os.readlink(target) == str(elsewhere) and files.requests == []
    assert not elsewhere.exists() if dangling else elsewhere.read_bytes() == b"the user's own file"


def test_a_symlink_that_appears_at_the_target_during_the_download_is_kept(files, tmp_path, monkeypatch):
    """The final rename never replaces what took the final name meanwhile, even a link to nothing."""
    files.files["/m.bin"] = Served(BODY)
    target = tmp_path / "m.bin"
    stream = download._stream

    def stream_then_link(*args, **kwargs):
        digest = stream(*args, **kwargs)
        target.symlink_to(tmp_path / "nowhere.bin")
        return digest

    monkeypatch.setattr(download, "_stream", stream_then_link)
    with pytest.raises(DownloadError, match=r"m\.bin appeared while downloading; the download stays in"):
        download_file(files.url + "/m.bin", target)
    assert target.is_symlink() and os.readlink(target) == str(tmp_path / "nowhere.bin")
    assert target.with_name("m.bin.part").read_bytes() == BODY and not (tmp_path / "nowhere.bin").exists()


def test_a_part_symlink_placed_after_the_check_is_not_followed(files, tmp_path, monkeypatch):
    """The .part is opened with O_NOFOLLOW: a link put there between the check and the write is refused."""
    files.files["/m.bin"] = Served(BODY)
    target, elsewhere = tmp_path / "m.bin", tmp_path / "elsewhere.bin"
    opened = download._open_resumed

    def open_then_link(url, part, facts, timeout):
        answer = opened(url, part, facts, timeout)
        part.symlink_to(elsewhere)
        return answer

    monkeypatch.setattr(download, "_open_resumed", open_then_link)
    with pytest.raises(DownloadError, match=r"m\.bin\.part is a symbolic link"):
        download_file(files.url + "/m.bin", target)
    assert not elsewhere.exists() and not target.exists()


def test_without_hard_links_the_final_rename_still_keeps_what_took_the_name(files, tmp_path, monkeypatch):
    def no_hard_links(*args, **kwargs):
        raise PermissionError(1, "hard links not supported")

    monkeypatch.setattr(download.os, "link", no_hard_links)
    files.files["/m.bin"] = Served(BODY)
    assert download_file(files.url + "/m.bin", tmp_path / "m.bin").read_bytes() == BODY
    assert not (tmp_path / "m.bin.part").exists()
    stream = download._stream

    def stream_then_link(*args, **kwargs):
        digest = stream(*args, **kwargs)
        (tmp_path / "n.bin").symlink_to(tmp_path / "nowhere.bin")
        return digest

    monkeypatch.setattr(download, "_stream", stream_then_link)
    files.files["/n.bin"] = Served(BODY)
    with pytest.raises(DownloadError, match=r"n\.bin appeared while downloading"):
        download_file(files.url + "/n.bin", tmp_path / "n.bin")
    assert (tmp_path / "n.bin").is_symlink() and (tmp_path / "n.bin.part").read_bytes() == BODY
