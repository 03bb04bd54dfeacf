"""wan_animate.client offline: patch rules, --set parsing, error formatting, and the whole CLI against a loopback
http.server stub standing in for ComfyUI (no websocket there, so the client polls /history)."""
from __future__ import annotations

import json
import threading
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from comfyui_server import free_port
from wan_animate import client

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
    patched = client.patch_workflow(two_images, {"image": "c.png"}, explicit={"image": "3.reference"})
    assert patched["3"]["inputs"]["reference"] == "c.png"
    with pytest.raises(ValueError, match="has no node 99"):
        client.patch_workflow(WORKFLOW, {"image": "c.png"}, explicit={"image": "99"})
    with pytest.raises(ValueError, match="has no node 99"):
        client.patch_workflow(WORKFLOW, {}, assignments=[("99", "seed", 1)])


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

class StubComfyUI:
    """Just enough of ComfyUI's HTTP API: uploads, /prompt (with rejection), /history (with failure), /view."""

    def __init__(self):
        self.uploads: dict[str, bytes] = {}
        self.prompts: dict[str, dict] = {}
        self.files = {"wan_00001_.png": b"\x89PNG fake output"}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                if url.path == "/system_stats":
                    return self._json(200, {"system": {}})
                if url.path.startswith("/history/"):
                    prompt_id = url.path.rsplit("/", 1)[1]
                    return self._json(200, stub.history(prompt_id))
                if url.path == "/view":
                    name = parse_qs(url.query)["filename"][0]
                    data = stub.files[name]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return self.wfile.write(data)
                self._json(404, {})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/upload/image":
                    raw = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
                    form = BytesParser(policy=HTTP).parsebytes(raw)
                    fields = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
                    upload = fields["image"]
                    stub.uploads[upload.get_filename()] = upload.get_payload(decode=True)
                    return self._json(200, {"name": upload.get_filename(), "subfolder": "", "type": "input"})
                if self.path == "/prompt":
                    request = json.loads(body)
                    prompt = request["prompt"]
                    if any(node["class_type"] == "Reject" for node in prompt.values()):
                        return self._json(400, {
                            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
                            "node_errors": {"5": {"class_type": "Reject", "errors": [
                                {"message": "Value not in list", "details": "mode: 'x' not in ['a']"}]}},
                        })
                    prompt_id = uuid.uuid4().hex
                    stub.prompts[prompt_id] = prompt
                    return self._json(200, {"prompt_id": prompt_id, "number": 1, "node_errors": {}})
                self._json(404, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def history(self, prompt_id: str) -> dict:
        prompt = self.prompts[prompt_id]
        if any(node["class_type"] == "Boom" for node in prompt.values()):
            error = {"node_id": "6", "node_type": "Boom", "exception_type": "ValueError",
                     "exception_message": "driving video has 3 frames; at least 5 are needed", "traceback": []}
            return {prompt_id: {"outputs": {}, "status": {"status_str": "error", "completed": False,
                                                          "messages": [["execution_error", error]]}}}
        return {prompt_id: {"outputs": {"4": {"images": [{"filename": "wan_00001_.png", "subfolder": "",
                                                           "type": "output"}]}},
                            "status": {"status_str": "success", "completed": True, "messages": []}}}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


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
    "path", sorted((Path(__file__).resolve().parent.parent / "workflows" / "api").glob("*.json")), ids=lambda p: p.name
)
def test_shipped_api_workflows_have_one_image_and_one_video_target(path):
    """`--image`/`--video` work on every shipped API workflow without --image-node/--video-node."""
    workflow = json.loads(path.read_text(encoding="utf-8"))
    patched = client.patch_workflow(workflow, {"image": "char.png", "video": "drive.mp4"})
    (image_target,) = client.find_targets(workflow, "image")
    (video_target,) = client.find_targets(workflow, "video")
    assert patched[image_target[0]]["inputs"][image_target[1]] == "char.png"
    assert patched[video_target[0]]["inputs"][video_target[1]] == "drive.mp4"
