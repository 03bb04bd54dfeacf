"""Without the golden folder every golden test skips with a reason that names the missing folder."""
import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
GOLDEN_FILES = sorted(TESTS.glob("test_*golden*.py"))


def test_golden_tests_name_the_missing_folder(tmp_path):
    missing = tmp_path / "no-golden-here"
    env = {**os.environ, "WAN_ANIMATE_GOLDEN": str(missing)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *map(str, GOLDEN_FILES)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    reasons = re.findall(r"^SKIPPED \[\d+\] \S+: (.*)$", run.stdout, flags=re.MULTILINE)
    assert len(GOLDEN_FILES) >= 5 and reasons, run.stdout[-3000:]
    assert not re.search(r"\d+ passed", run.stdout), run.stdout[-3000:]
    for reason in reasons:
        assert str(missing) in reason and "WAN_ANIMATE_GOLDEN" in reason, reason
