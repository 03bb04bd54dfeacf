"""Save Embeddings writes what Load Embeddings reads back, into a new numbered file of the output folder."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from test_nodes_errors import run_node

from wan_animate.io.embeddings import read_embeddings


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("WAN_ANIMATE_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("WAN_ANIMATE_INPUT_DIR", str(tmp_path / "input"))
    (tmp_path / "input").mkdir()
    return tmp_path


def job(seed: int):
    gen = torch.Generator().manual_seed(seed)
    positive = [[torch.randn(1, 7, 4096, generator=gen), {"pooled_output": None}]]
    negative = [[torch.randn(1, 5, 4096, generator=gen), {}]]
    clip = {"penultimate_hidden_states": torch.randn(1, 257, 1280, generator=gen)}
    return positive, negative, clip


def test_saved_embeddings_load_back_and_never_overwrite(pack, folders):
    positive, negative, clip = job(0)
    first = run_node(pack, "WanAnimateSaveEmbeddings", positive=positive, negative=negative, clip_vision_output=clip,
                     filename_prefix="embeds")[0]
    second = run_node(pack, "WanAnimateSaveEmbeddings", positive=job(1)[0], clip_vision_output=job(1)[2],
                      filename_prefix="embeds")[0]
    assert first == "wan_animate_embeddings/embeds_00001.safetensors [output]"
    assert second == "wan_animate_embeddings/embeds_00002.safetensors [output]"
    listed = pack.NODE_CLASS_MAPPINGS["WanAnimateLoadEmbeddings"].INPUT_TYPES()["required"]["file"][0]
    assert first in listed and second in listed

    loaded_positive, loaded_negative, loaded_clip = run_node(pack, "WanAnimateLoadEmbeddings", file=first)
    assert torch.equal(loaded_positive[0][0], positive[0][0])
    assert torch.equal(loaded_negative[0][0], negative[0][0])
    assert torch.equal(loaded_clip.penultimate_hidden_states, clip["penultimate_hidden_states"])
    stored = load_file(str(folders / "output" / "wan_animate_embeddings" / "embeds_00002.safetensors"))
    assert sorted(stored) == ["clip_fea", "context"]  # saved without a negative: none stored
    assert read_embeddings(folders / "output" / "wan_animate_embeddings" / "embeds_00001.safetensors").context_null \
        is not None


def test_prefix_outside_the_output_folder_is_refused(pack, folders):
    positive, negative, clip = job(0)
    with pytest.raises(ValueError, match="filename_prefix"):
        run_node(pack, "WanAnimateSaveEmbeddings", positive=positive, clip_vision_output=clip,
                 filename_prefix="../../escaped")
    assert not list(folders.rglob("escaped*"))


def test_non_finite_embeddings_are_not_saved(pack, folders):
    positive, negative, clip = job(0)
    positive[0][0][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="positive holds NaN"):
        run_node(pack, "WanAnimateSaveEmbeddings", positive=positive, clip_vision_output=clip, filename_prefix="x")
    assert not (folders / "output" / "wan_animate_embeddings").exists() or \
        not list((folders / "output" / "wan_animate_embeddings").iterdir())
