"""Resumable jobs: the key covers the models, damaged segment files are recomputed, resume_dir stays in output/."""
from __future__ import annotations

import importlib
import logging
import os
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, tiny_config
from helpers_vae import random_vae
from wan_animate.loading.model_handle import DiTHandle, DiTOptions
from wan_animate.model.vae_coding import VAECoder
from wan_animate.model.vae_config import VAEConfig
from wan_animate.pipeline.generate import AnimateInputs, GenerationSettings, generate
from wan_animate.pipeline.resume import SegmentStore

HEIGHT, WIDTH = 32, 48
CONFIG = tiny_config()
VAE_CONFIG = VAEConfig(dim=4, z_dim=16, dim_mult=(1, 1, 1, 1), num_res_blocks=1, attn_scales=(),
                       temperal_downsample=(False, True, True))
SAMPLER = dict(steps=1, shift=5.0, scheduler="euler", seed=0, cfg=1.0, segment_length=5, guide_frames="1")


def make_inputs(frames: int, seed: int = 0) -> AnimateInputs:
    g = torch.Generator().manual_seed(seed)
    face = CONFIG.face_size
    return AnimateInputs(
        reference=torch.rand(HEIGHT, WIDTH, 3, generator=g),
        pose=torch.rand(frames, HEIGHT, WIDTH, 3, generator=g),
        face=torch.rand(frames, face, face, 3, generator=g),
        context=torch.randn(5, CONFIG.text_dim, generator=g),
        clip_fea=torch.randn(1, 257, CONFIG.clip_dim, generator=g),
    )


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_models")
    model = build_tiny_dit(seed=0, config=CONFIG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "dit.safetensors"))
    gen = torch.Generator().manual_seed(1)
    lora = {}
    for block in range(CONFIG.num_layers):
        for layer in ("self_attn.o", "ffn.2"):
            out_features, in_features = model.get_submodule(f"blocks.{block}.{layer}").weight.shape
            key = f"diffusion_model.blocks.{block}.{layer}"
            lora[f"{key}.lora_A.weight"] = torch.randn(2, in_features, generator=gen)
            lora[f"{key}.lora_B.weight"] = torch.randn(out_features, 2, generator=gen)
    save_file(lora, str(root / "style.safetensors"))
    return root


def run_sampler(pack, handle: DiTHandle, vae: VAECoder, inputs: AnimateInputs, resume_dir: str) -> torch.Tensor:
    embeds = importlib.import_module(f"{pack.__name__}.nodes.types").Embeds("animate", inputs)
    sampler = pack.NODE_CLASS_MAPPINGS["WanAnimateSampler"]()
    return sampler.sample(model=handle, vae=vae, embeds=embeds, resume_dir=resume_dir, **SAMPLER)[0]


def test_switching_a_model_recomputes_instead_of_resuming(pack, model_files, tmp_path, monkeypatch):
    """Same inputs and settings, same resume_dir: a changed LoRA strength, a removed LoRA, another VAE or another
    weight storage is a different job; the unchanged job resumes."""
    monkeypatch.chdir(tmp_path)  # outside ComfyUI the output folder is ./output
    inputs = make_inputs(5)
    base = DiTHandle(str(model_files / "dit.safetensors"), DiTOptions(dtype=torch.float32))
    style = str(model_files / "style.safetensors")
    vae = VAECoder(random_vae(VAE_CONFIG, seed=0))
    first = run_sampler(pack, base.with_lora(style, 1.0), vae, inputs, "job")
    runs = {
        "strength 0.5": (base.with_lora(style, 0.5), vae),
        "no LoRA": (base, vae),
        "another VAE": (base.with_lora(style, 1.0), VAECoder(random_vae(VAE_CONFIG, seed=5))),
        "fp8 storage": (DiTHandle(base.path, DiTOptions(dtype=torch.float32, storage="fp8_e4m3fn"))
                        .with_lora(style, 1.0), vae),
    }
    for label, (handle, coder) in runs.items():
        resumed = run_sampler(pack, handle, coder, inputs, "job")
        fresh = run_sampler(pack, handle, coder, inputs, "")
        assert torch.equal(resumed, fresh), f"{label}: the re-run did not compute its own frames"
        assert not torch.equal(resumed, first), label
    jobs = os.listdir(tmp_path / "output" / "job")
    again = run_sampler(pack, base.with_lora(style, 1.0), vae, inputs, "job")
    assert torch.equal(again, first) and os.listdir(tmp_path / "output" / "job") == jobs
    assert len(jobs) == 1 + len(runs)


def test_identity_follows_the_files(model_files, tmp_path):
    dit = tmp_path / "dit.safetensors"
    dit.write_bytes((model_files / "dit.safetensors").read_bytes())
    handle = DiTHandle(str(dit)).with_lora(str(model_files / "style.safetensors"), 1.0)
    before = handle.identity()
    os.utime(dit, ns=(1_000_000_000, 1_000_000_000))  # replaced by a file of the same size
    assert handle.identity() != before


@pytest.fixture(scope="module")
def tiny_models():
    return build_tiny_dit(seed=0, config=CONFIG), random_vae(VAE_CONFIG)


class CountingDiT:
    def __init__(self, dit):
        self.dit, self.calls = dit, 0

    def encode_face(self, face):
        return self.dit.encode_face(face)

    def __call__(self, *args):
        self.calls += 1
        return self.dit(*args)


def damage_truncate(path: str, other_job: str) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as file:
        file.write(data[: len(data) * 2 // 3])


def damage_foreign(path: str, other_job: str) -> None:
    """A segment file of the same layout written for another job (copied in by hand, or a key collision)."""
    with open(os.path.join(other_job, os.path.basename(path)), "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data)


def damage_garbage(path: str, other_job: str) -> None:
    with open(path, "wb") as file:
        file.write(b"\0" * 100)


@pytest.fixture(scope="module")
def finished_jobs(tiny_models, tmp_path_factory):
    """A finished 3-segment job and another job's segments; (settings, video, job folder, other job folder)."""
    dit, vae = tiny_models
    root = tmp_path_factory.mktemp("finished")
    job = GenerationSettings(clip_len=5, steps=1, solver="euler", seed=3, resume_dir=str(root / "job"))
    complete = generate(dit, vae, make_inputs(13), job)
    other = GenerationSettings(clip_len=5, steps=1, solver="euler", seed=4, resume_dir=str(root / "other"))
    generate(dit, vae, make_inputs(13), other)
    [folder] = [path for path in (root / "job").iterdir()]
    [other_folder] = [path for path in (root / "other").iterdir()]
    return job, complete, folder, other_folder


@pytest.mark.parametrize("damage", [damage_truncate, damage_foreign, damage_garbage])
def test_a_damaged_segment_is_named_and_recomputed(tiny_models, finished_jobs, tmp_path, caplog, damage):
    dit, vae = tiny_models
    job, complete, finished, other_folder = finished_jobs
    folder = tmp_path / finished.name
    shutil.copytree(finished, folder)
    bad = str(folder / "segment_00001.safetensors")
    damage(bad, str(other_folder))

    counting = CountingDiT(dit)
    with caplog.at_level(logging.WARNING):
        resumed = generate(counting, vae, make_inputs(13), replace(job, resume_dir=str(tmp_path)))
    assert counting.calls == 2  # segments 1 and 2 computed again, segment 0 reused
    assert torch.equal(resumed, complete)
    assert any(bad in record.getMessage() for record in caplog.records), [r.getMessage() for r in caplog.records]
    assert SegmentStore(str(tmp_path), folder.name).finished_count() == 3  # repaired


@pytest.fixture
def output_dir(tmp_path, monkeypatch, pack):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "output").mkdir()
    return tmp_path / "output"


@pytest.mark.parametrize("escape", ["..", "../elsewhere", "job/../../elsewhere", "/tmp/elsewhere", "link_out/job"])
def test_resume_dir_outside_the_output_folder_is_refused(pack, output_dir, escape):
    compat = importlib.import_module(f"{pack.__name__}.nodes.comfy_compat")
    os.symlink(output_dir.parent, output_dir / "link_out")
    with pytest.raises(ValueError, match="resume_dir") as error:
        compat.output_path(escape, "resume_dir")
    assert escape in str(error.value) and "output folder" in str(error.value)


def test_resume_dir_inside_the_output_folder_is_accepted(pack, output_dir):
    compat = importlib.import_module(f"{pack.__name__}.nodes.comfy_compat")
    (output_dir / "real").mkdir()
    os.symlink(output_dir / "real", output_dir / "link_in")
    root = os.path.realpath(output_dir)
    assert compat.output_path("jobs/a", "resume_dir") == os.path.join(root, "jobs", "a")
    assert compat.output_path(os.path.join(root, "b"), "resume_dir") == os.path.join(root, "b")
    assert compat.output_path("link_in/c", "resume_dir") == os.path.join(root, "real", "c")


def test_sampler_refuses_an_escaping_resume_dir_before_any_work(pack, output_dir, model_files):
    handle = DiTHandle(str(model_files / "dit.safetensors"), DiTOptions(dtype=torch.float32))
    with pytest.raises(ValueError, match="resume_dir is '../x'"):
        run_sampler(pack, handle, VAECoder(random_vae(VAE_CONFIG)), make_inputs(5), "../x")
    assert not (output_dir.parent / "x").exists() and handle._shared.model is None
