"""Available host memory without psutil (/proc/meminfo, then os.sysconf) and the warning for jobs that do not fit."""
from __future__ import annotations

import logging
import os
import sys

import pytest

from wan_animate.preprocess.prepare import job_frame_bytes
from wan_animate.runtime import host_memory


def test_meminfo_is_read_without_psutil(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "psutil", None)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:         1000000 kB\nMemAvailable:   12345678 kB\n")
    monkeypatch.setattr(host_memory, "MEMINFO", str(meminfo))
    assert host_memory.available_host_bytes() == 12345678 * 1024


def test_sysconf_when_there_is_no_meminfo(monkeypatch, tmp_path):
    if not hasattr(os, "sysconf"):
        pytest.skip("no os.sysconf here")
    monkeypatch.setitem(sys.modules, "psutil", None)
    monkeypatch.setattr(host_memory, "MEMINFO", str(tmp_path / "absent"))
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    assert host_memory.available_host_bytes() == 4096000


def test_unknown_memory_never_warns(monkeypatch):
    monkeypatch.setattr(host_memory, "available_host_bytes", lambda: None)
    assert host_memory.warn_if_host_memory_short(1 << 50, "a job") is False


def test_warning_only_when_the_job_does_not_fit(monkeypatch, caplog):
    monkeypatch.setattr(host_memory, "available_host_bytes", lambda: 8 << 30)
    with caplog.at_level(logging.WARNING, logger=host_memory.__name__):
        assert host_memory.warn_if_host_memory_short(4 << 30, "small job") is False
        assert host_memory.warn_if_host_memory_short(12 << 30, "a job of 900 frames") is True
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith("a job of 900 frames needs about 12.0 GiB of host memory for its frames, but only "
                                  "8.0 GiB is available")


def test_job_frame_bytes_counts_replacement_frames():
    animate = job_frame_bytes(77, 720, 1280, "animate")
    pixels = 77 * 720 * 1280
    assert animate == pixels * 27 + 77 * 512 * 512 * 15
    assert job_frame_bytes(77, 720, 1280, "replace") - animate == pixels * 26
