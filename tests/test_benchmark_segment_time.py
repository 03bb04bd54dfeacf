"""benchmarks/segment_time.py's CPU smoke mode: the real generate() path with tiny models, every part timed."""
import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def segment_time():
    return load_benchmark("segment_time")


@pytest.mark.parametrize("cfg,calls_per_step", [(1.0, 1), (2.0, 2)])
def test_tiny_cpu_run_times_every_part_of_one_segment(segment_time, cfg, calls_per_step, capsys):
    result = segment_time.main(["--tiny", "--device", "cpu", "--steps", "2", "--cfg", str(cfg)])
    assert capsys.readouterr().out.count("\n") == 1  # one JSON line
    assert result["output_frames"] == 9 and result["frames"] == 9
    assert result["model_calls"] == 2 * calls_per_step  # cfg > 1 adds the unconditional pass
    assert result["vae_encode_s"] > 0 and result["vae_decode_s"] > 0 and result["dit_steps_s"] > 0
    parts = result["vae_s"] + result["dit_steps_s"] + result["encode_face_s"]
    assert parts <= result["total_s"] + 0.01 and result["other_s"] == pytest.approx(result["total_s"] - parts, abs=0.01)
    assert result["preprocess_s_estimate"] == round(9 / segment_time.PREPROCESS_FPS_CPU, 1)
    assert result["peak_gib"] is None  # no CUDA peak on the CPU
