"""wan_animate.download against a loopback http.server serving fake model files: resume after an interrupted
transfer, size and sha256 checks (given, or published the way Hugging Face does), nothing left under the final name."""
from __future__ import annotations

import hashlib
import io
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
