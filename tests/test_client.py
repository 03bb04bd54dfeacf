"""wan_animate.client offline: patch rules, --set parsing, error formatting, and the whole CLI against a loopback
http.server stub standing in for ComfyUI (no websocket there, so the client polls /history)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from comfyui_server import free_port
from comfyui_stub import StubComfyUI
from wan_animate import client

REPO = Path(__file__).resolve().parent.parent
TEST_WORKFLOWS = REPO / "tests" / "workflows_test"

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
    "2": {"class_type": "LoadVideo", "inputs": {"file": "placeholder.mp4"}},
    "3": {"class_type": "WanAnimateSampler", "inputs": {"seed": 1, "steps": 20, "model": ["9", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "wan"}},
}


# ---- patch rules and parsing -------------------------------------------------------------------------------------

def test_parse_assignment_reads_json_values_and_keeps_strings():
    assert client.parse_assignment("12.seed=7") == ("12", "seed", 7)
    assert client.parse_assignment("3.cfg=1.5") == ("3", "cfg", 1.5)
    assert client.parse_assignment("3.enabled=true") == ("3", "enabled", True)
    assert client.parse_assignment("5.text=a dancer=yes") == ("5", "text", "a dancer=yes")
    assert client.parse_assignment('5.text="42"') == ("5", "text", "42")


@pytest.mark.parametrize("text", ["seed=7", "12seed=7", "12.seed", ".seed=1", "12.=1"])
def test_parse_assignment_rejects_malformed(text):
    with pytest.raises(ValueError, match="NODE_ID.INPUT=VALUE"):
        client.parse_assignment(text)


def test_default_rules_find_core_loaders_and_pack_inputs():
    workflow = {**WORKFLOW, "7": {"class_type": "WanAnimateLoadVideo", "inputs": {"video": "x.mp4", "fps": 30}}}
    assert client.find_targets(workflow, "image") == [("1", "image")]
    assert client.find_targets(workflow, "video") == [("2", "file"), ("7", "video")]


def test_patch_writes_uploads_then_assignments_without_touching_the_original():
    original = json.loads(json.dumps(WORKFLOW))
    patched = client.patch_workflow(
        WORKFLOW, {"image": "char.png", "video": "drive.mp4"}, assignments=[("3", "seed", 42), ("1", "image", "b.png")]
    )
    assert patched["1"]["inputs"]["image"] == "b.png"  # --set wins over the upload rule
    assert patched["2"]["inputs"]["file"] == "drive.mp4"
    assert patched["3"]["inputs"] == {"seed": 42, "steps": 20, "model": ["9", 0]}
    assert WORKFLOW == original


def test_patch_reports_missing_and_ambiguous_targets():
    with pytest.raises(ValueError, match=r"no node that takes the video .*LoadVideo\.file.*--video-node"):
        client.patch_workflow({"1": WORKFLOW["1"]}, {"video": "d.mp4"})
    two_images = {**WORKFLOW, "8": {"class_type": "LoadImage", "inputs": {"image": "mask.png"}}}
    with pytest.raises(ValueError, match=r"several nodes could take the image \(1\.image \[LoadImage\], 8\.image"):
        client.patch_workflow(two_images, {"image": "c.png"})


def test_explicit_target_resolves_ambiguity_and_checks_the_node():
    two_images = {**WORKFLOW, "8": {"class_type": "LoadImage", "inputs": {"image": "mask.png"}}}
    patched = client.patch_workflow(two_images, {"image": "c.png"}, explicit={"image": "8"})
    assert (patched["1"]["inputs"]["image"], patched["8"]["inputs"]["image"]) == ("placeholder.png", "c.png")
    patched = client.patch_workflow(two_images, {"image": "c.png"}, explicit={"image": "4.filename_prefix"})
    assert patched["4"]["inputs"]["filename_prefix"] == "c.png"
    with pytest.raises(ValueError, match="has no node 99"):
        client.patch_workflow(WORKFLOW, {"image": "c.png"}, explicit={"image": "99"})
    with pytest.raises(ValueError, match="has no node 99"):
        client.patch_workflow(WORKFLOW, {}, assignments=[("99", "seed", 1)])


def test_explicit_target_must_be_an_input_the_node_has():
    with pytest.raises(ValueError, match=r"--image-node 3\.reference: node 3 \[WanAnimateSampler\] has no input "
                                         r"'reference' \(its inputs: seed, steps, model\)"):
        client.patch_workflow(WORKFLOW, {"image": "c.png"}, explicit={"image": "3.reference"})
    with pytest.raises(ValueError, match=r"--video-node 3\.model: .* is a link from node 9, not a file name"):
        client.patch_workflow(WORKFLOW, {"video": "d.mp4"}, explicit={"video": "3.model"})


def test_load_embeddings_file_is_not_a_video_target():
    """The tiny test workflows hold a Load Embeddings node (input `file`) beside the core LoadVideo."""
    workflow = json.loads((TEST_WORKFLOWS / "animate_tiny.json").read_text(encoding="utf-8"))
    assert {n["class_type"] for n in workflow.values()} >= {"WanAnimateLoadEmbeddings", "LoadVideo"}
    assert client.find_targets(workflow, "video") == [("5", "file")]
    patched = client.patch_workflow(workflow, {"image": "c.png", "video": "d.mp4"})
    assert patched["8"]["inputs"]["file"] == workflow["8"]["inputs"]["file"]


def test_output_files_keeps_saved_files_and_optionally_previews():
    entry = {"outputs": {
        "10": {"images": [{"filename": "b.png", "subfolder": "", "type": "output"}]},
        "9": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}], "text": ["not a file"]},
        "2": {"videos": [{"filename": "a.mp4", "subfolder": "wan", "type": "output"}]},
    }}
    assert [f["filename"] for f in client.output_files(entry)] == ["a.mp4", "b.png"]
    assert [f["filename"] for f in client.output_files(entry, ("output", "temp"))] == ["a.mp4", "p.png", "b.png"]


def test_error_formatting_names_nodes_and_exceptions():
    text = client.format_prompt_rejection(
        {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": ""},
        {"4": {"class_type": "SaveImage", "dependent_outputs": ["4"], "errors": [
            {"type": "required_input_missing", "message": "Required input is missing", "details": "images"}]}},
    )
    assert text.splitlines() == [
        "ComfyUI rejected the workflow: Prompt outputs failed validation",
        "  node 4 [SaveImage]: Required input is missing (images)",
    ]
    text = client.format_execution_error({
        "node_id": "3", "node_type": "WanAnimateSampler", "exception_type": "torch.OutOfMemoryError",
        "exception_message": "CUDA out of memory\n", "traceback": ["  File a.py\n", '  File "x.py", line 3, in f\n'],
    })
    assert text.startswith("ComfyUI failed while running node 3 [WanAnimateSampler]: torch.OutOfMemoryError: CUDA")
    assert text.endswith('at File "x.py", line 3, in f')


# ---- the CLI against a stub ComfyUI ------------------------------------------------------------------------------

@pytest.fixture
def stub():
    with StubComfyUI() as server:
        yield server


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "char.png").write_bytes(b"character image bytes")
    (tmp_path / "drive.mp4").write_bytes(b"driving video bytes")
    return tmp_path


def _write_workflow(tmp_path: Path, workflow: dict) -> Path:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow))
    return path


def test_cli_uploads_patches_queues_and_downloads(stub, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = client.main([
        "--server", stub.url, "--workflow", str(_write_workflow(tmp_path, WORKFLOW)), "--image",
        str(inputs / "char.png"), "--video", str(inputs / "drive.mp4"), "--set", "3.seed=123", "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    assert stub.uploads == {"char.png": b"character image bytes", "drive.mp4": b"driving video bytes"}
    (prompt,) = stub.prompts.values()
    assert prompt["1"]["inputs"]["image"] == "char.png"
    assert prompt["2"]["inputs"]["file"] == "drive.mp4"
    assert prompt["3"]["inputs"]["seed"] == 123
    assert (out / "wan_00001_.png").read_bytes() == b"\x89PNG fake output"
    assert capsys.readouterr().out.strip() == str(out / "wan_00001_.png")


def test_cli_prints_rejections_per_node(stub, tmp_path, capsys):
    workflow = {"5": {"class_type": "Reject", "inputs": {"mode": "x"}}}
    code = client.main(["--server", stub.url, "--workflow", str(_write_workflow(tmp_path, workflow))])
    err = capsys.readouterr().err
    assert code == 1
    assert "ComfyUI rejected the workflow: Prompt outputs failed validation" in err
    assert "node 5 [Reject]: Value not in list (mode: 'x' not in ['a'])" in err


def test_cli_reports_the_failing_node(stub, tmp_path, capsys):
    workflow = {"6": {"class_type": "Boom", "inputs": {}}}
    code = client.main(["--server", stub.url, "--workflow", str(_write_workflow(tmp_path, workflow)), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "node 6 [Boom]: ValueError: driving video has 3 frames; at least 5 are needed" in err


def test_cli_names_an_unreachable_server(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    code = client.main(["--server", url, "--workflow", str(_write_workflow(tmp_path, WORKFLOW))])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach ComfyUI at {url}" in err


def test_cli_rejects_ui_format_workflows(stub, tmp_path, capsys):
    ui_format = {"nodes": [], "links": [], "version": 0.4}
    code = client.main(["--server", stub.url, "--workflow", str(_write_workflow(tmp_path, ui_format))])
    assert code == 1
    assert "is not an API-format workflow" in capsys.readouterr().err


def test_missing_input_file_is_named(stub, tmp_path, capsys):
    code = client.main(["--server", stub.url, "--workflow", str(_write_workflow(tmp_path, WORKFLOW)),
                        "--image", str(tmp_path / "nope.png")])
    assert code == 1
    assert f"image file {tmp_path / 'nope.png'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "path", sorted([*(REPO / "workflows" / "api").glob("*.json"), *TEST_WORKFLOWS.glob("*.json")]),
    ids=lambda p: p.name,
)
def test_shipped_api_workflows_have_one_image_and_one_video_target(path):
    """`--image`/`--video` work on every shipped API workflow without --image-node/--video-node."""
    workflow = json.loads(path.read_text(encoding="utf-8"))
    patched = client.patch_workflow(workflow, {"image": "char.png", "video": "drive.mp4"})
    (image_target,) = client.find_targets(workflow, "image")
    (video_target,) = client.find_targets(workflow, "video")
    assert patched[image_target[0]]["inputs"][image_target[1]] == "char.png"
    assert patched[video_target[0]]["inputs"][video_target[1]] == "drive.mp4"


# ---- safety: downloads stay inside --out, nothing is overwritten on either side ----------------------------------

def _run_cli(stub, tmp_path, *extra, workflow=WORKFLOW, out=None):
    out = out or tmp_path / "out"
    return client.main(["--server", stub.url, "--workflow", str(_write_workflow(tmp_path, workflow)), "--quiet",
                        "--out", str(out), *extra])


@pytest.mark.parametrize("subfolder, filename", [
    ("..", "escaped.png"), ("", "../escaped.png"), ("a/../..", "escaped.png"), ("..\\", "escaped.png"),
    ("ABS", "escaped.png"), ("", "ABS/escaped.png"),
])
def test_download_refuses_names_that_leave_out(stub, tmp_path, capsys, subfolder, filename):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    subfolder, filename = (text.replace("ABS", str(outside)) for text in (subfolder, filename))
    stub.files["escaped.png"] = b"planted"
    stub.outputs = [{"filename": "wan_00001_.png", "subfolder": "", "type": "output"},
                    {"filename": filename, "subfolder": subfolder, "type": "output"}]
    out = tmp_path / "work" / "out"
    code = _run_cli(stub, tmp_path, out=out)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: refusing") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("escaped.png")) == []
    assert not out.exists() or list(out.iterdir()) == []  # refused before the first file was written


def test_download_refuses_a_symlink_that_leads_out(stub, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "videos").symlink_to(outside, target_is_directory=True)
    stub.outputs = [{"filename": "wan_00001_.png", "subfolder": "videos", "type": "output"}]
    assert _run_cli(stub, tmp_path, out=out) == 1
    assert "outside" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


def test_download_keeps_existing_files_unless_overwrite(stub, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "wan_00001_.png").write_bytes(b"the user's file")
    assert _run_cli(stub, tmp_path, out=out) == 0
    assert capsys.readouterr().out.splitlines() == [str(out / "wan_00001_ (1).png")]
    assert (out / "wan_00001_.png").read_bytes() == b"the user's file"
    assert (out / "wan_00001_ (1).png").read_bytes() == b"\x89PNG fake output"
    assert _run_cli(stub, tmp_path, out=out) == 0
    assert capsys.readouterr().out.splitlines() == [str(out / "wan_00001_ (2).png")]
    assert _run_cli(stub, tmp_path, "--overwrite", out=out) == 0
    assert capsys.readouterr().out.splitlines() == [str(out / "wan_00001_.png")]
    assert (out / "wan_00001_.png").read_bytes() == b"\x89PNG fake output"
    assert sorted(p.name for p in out.iterdir()) == ["wan_00001_ (1).png", "wan_00001_ (2).png", "wan_00001_.png"]


def test_upload_never_overwrites_a_server_file(stub, inputs, tmp_path, capsys):
    stub.uploads["char.png"] = b"someone else's character"
    code = _run_cli(stub, tmp_path, "--image", str(inputs / "char.png"), "--video", str(inputs / "drive.mp4"))
    assert code == 0, capsys.readouterr().err
    assert all("overwrite" not in fields for fields in stub.upload_fields)
    assert stub.uploads["char.png"] == b"someone else's character"
    assert stub.uploads["char (1).png"] == b"character image bytes"
    (prompt,) = stub.prompts.values()
    assert prompt["1"]["inputs"]["image"] == "char (1).png"  # the name the server returned


@pytest.mark.parametrize("extra, message", [
    (["--set", "12seed=1"], "--set expects NODE_ID.INPUT=VALUE"),
    (["--set", "99.seed=1"], "has no node 99"),
    (["--image-node", "3.reference"], "has no input 'reference'"),
    (["--image-node", "77"], "has no node 77"),
    (["--video", "MISSING"], "video file .*missing.mp4 does not exist"),
])
def test_arguments_are_checked_before_anything_is_uploaded(stub, inputs, tmp_path, capsys, extra, message):
    extra = [str(tmp_path / "missing.mp4") if item == "MISSING" else item for item in extra]
    code = _run_cli(stub, tmp_path, "--image", str(inputs / "char.png"), *extra)
    assert code == 1
    assert re.search(message, capsys.readouterr().err)
    assert stub.uploads == {} and stub.prompts == {}


# ---- robustness: a broken or foreign server gets a message, never a traceback ------------------------------------

@pytest.mark.parametrize("route, answer, message", [
    ("/system_stats", (200, b"<html>hello</html>"), r"does not look like a ComfyUI server: GET /system_stats"),
    ("/system_stats", (404, b"not found"), r"answered HTTP 404 .* to GET /system_stats; is .* a ComfyUI server"),
    ("/system_stats", (200, b'{"ok": true}'), r"does not look like a ComfyUI server: GET /system_stats answered"),
    ("/upload/image", (500, b"oops"), r"answered HTTP 500 .* to the upload of"),
    ("/upload/image", (200, b'{"subfolder": ""}'), r"without the stored name"),
    ("/prompt", (500, b"<html>Internal Server Error</html>"), r"ComfyUI answered HTTP 500 to /prompt"),
    ("/prompt", (200, b'{"number": 3}'), r"POST /prompt answered .*without a prompt_id"),
    ("/prompt", (200, b"[]"), r"POST /prompt answered \[\], without a prompt_id"),
    ("/history", (500, b"boom"), r"answered HTTP 500 .* to GET /history/"),
    ("/history", (200, b"[1, 2]"), r"GET /history/\w+ answered \[1, 2\], not an object"),
    ("/history", (200, b"HISTORY_STRING"), r"malformed /history entry"),
    ("/history", (200, b"HISTORY_OUTPUTS"), r"malformed /history entry: 'outputs' should map"),
    ("/history", (200, b"HISTORY_MESSAGES"), r"malformed /history entry for \w+: status"),
])
def test_broken_or_foreign_servers_are_named_without_a_traceback(stub, inputs, tmp_path, capsys, route, answer,
                                                                 message):
    status, body = answer
    if body.startswith(b"HISTORY_"):  # answers that need the prompt id: patch the stub's history instead
        kind = body.decode()
        stub.history = lambda prompt_id: {prompt_id: {
            "HISTORY_STRING": "done",
            "HISTORY_OUTPUTS": {"outputs": [1], "status": {"messages": []}},
            "HISTORY_MESSAGES": {"outputs": {}, "status": {"messages": "none"}},
        }[kind]}
    else:
        stub.broken[route] = (status, body)
    code = _run_cli(stub, tmp_path, "--image", str(inputs / "char.png"))
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and err.startswith("error: ")
    assert re.search(message, err), err
