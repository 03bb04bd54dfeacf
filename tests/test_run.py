"""`python3 -m wan_animate.run` offline: a fake ComfyUI folder, the loopback ComfyUI stub (already running, or started
as the folder's main.py) and a loopback file server for the declared models."""
from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from pathlib import Path

import pytest

from comfyui_server import free_port
from comfyui_stub import StubComfyUI
from file_server import FileServer, Served
from wan_animate import run
from wan_animate.workflow_files import REPO_ROOT, choose_workflow, declared_models

PNG = b"\x89PNG\r\n\x1a\n" + b"character pixels"
MP4 = b"\x00\x00\x00\x18ftypisom" + b"driving frames"
DIT = b"tiny dit weights" * 100
DETECTOR = b"tiny onnx detector" * 50
API = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "character.png"}, "_meta": {"title": "Character image"}},
    "2": {"class_type": "LoadVideo", "inputs": {"file": "driving.mp4"}},
    "3": {"class_type": "WanAnimateModelLoader", "inputs": {"model_name": "dit.safetensors"}},
    "4": {"class_type": "WanAnimatePoseModelLoader", "inputs": {"detector": "det.onnx"}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "wan"}},
}


def _ui(files_url: str) -> dict:
    return {"nodes": [
        {"id": 3, "type": "WanAnimateModelLoader", "properties": {"models": [
            {"name": "dit.safetensors", "url": f"{files_url}/resolve/dit.safetensors",
             "directory": "diffusion_models"}]}},
        {"id": 4, "type": "WanAnimatePoseModelLoader", "properties": {"models": [
            {"name": "det.onnx", "url": f"{files_url}/det.onnx", "directory": "detection"}]}},
        {"id": 30, "type": "MarkdownNote", "properties": {}},
    ], "links": [], "version": 0.4}


@pytest.fixture
def job(tmp_path):
    """A ComfyUI folder, a workflow with its UI twin, the two inputs, and the file server holding the models."""
    with FileServer() as files:
        files.files["/resolve/dit.safetensors"] = Served(
            b"", redirect_to="/cdn/dit", headers={"X-Linked-ETag": f'"{hashlib.sha256(DIT).hexdigest()}"'})
        files.files["/cdn/dit"] = Served(DIT)
        files.files["/det.onnx"] = Served(DETECTOR)
        comfyui = tmp_path / "ComfyUI"
        (comfyui / "models").mkdir(parents=True)
        (comfyui / "main.py").write_text("raise SystemExit('not used in this test')\n")
        (tmp_path / "wf" / "api").mkdir(parents=True)
        (tmp_path / "wf" / "job.json").write_text(json.dumps(_ui(files.url)))
        (tmp_path / "wf" / "api" / "job.json").write_text(json.dumps(API))
        (tmp_path / "char.png").write_bytes(PNG)
        (tmp_path / "drive.mp4").write_bytes(MP4)
        yield tmp_path, comfyui, files


def _args(tmp_path: Path, comfyui, port: int, *extra: str) -> list[str]:
    return ["--comfyui", str(comfyui), "--port", str(port), "--workflow", str(tmp_path / "wf" / "api" / "job.json"),
            "--image", str(tmp_path / "char.png"), "--video", str(tmp_path / "drive.mp4"),
            "--out", str(tmp_path / "results"), *extra]


def test_choose_workflow_reads_the_models_of_the_ui_twin():
    choice = choose_workflow("animate")
    assert choice.api_path == REPO_ROOT / "workflows" / "api" / "animate.json"
    assert choice.ui_path == REPO_ROOT / "workflows" / "animate.json"
    names = {(m.directory, m.name) for m in choice.models}
    assert ("vae", "wan_2.1_vae.safetensors") in names and ("detection", "yolov10m.onnx") in names
    assert all(m.url.startswith("https://huggingface.co/") for m in choice.models)
    assert choose_workflow(str(REPO_ROOT / "workflows" / "replace.json")).api_path.name == "replace.json"
    tiny = choose_workflow(str(REPO_ROOT / "tests" / "workflows_test" / "animate_tiny.json"))
    assert tiny.models == [] and tiny.ui_path is None
    with pytest.raises(ValueError, match="no such workflow; choose one of animate, long_video, low_vram, low_vram_gguf, replace, tpose_kontext"):
        choose_workflow("animat")


def test_declared_models_are_listed_once():
    ui = {"nodes": [{"properties": {"models": [{"name": "a", "directory": "vae", "url": "u"}]}},
                    {"properties": {"models": [{"name": "a", "directory": "vae", "url": "u"},
                                               {"name": "b", "directory": "loras"}]}}]}
    assert [(m.name, m.directory, m.url) for m in declared_models(ui)] == [("a", "vae", "u"), ("b", "loras", None)]


@pytest.mark.parametrize("image, video, message", [
    (b"hello, I am text", MP4, r"--image .*char.png is neither an image nor a video; expected an image \(PNG"),
    (MP4, MP4, r"--image .*char.png is a video; expected an image"),
    (PNG, PNG, r"--video .*drive.mp4 is an image; expected a video \(MP4/MOV"),
])
def test_files_that_are_not_an_image_or_a_video_are_refused(job, capsys, image, video, message):
    tmp_path, comfyui, _ = job
    (tmp_path / "char.png").write_bytes(image)
    (tmp_path / "drive.mp4").write_bytes(video)
    assert run.main(_args(tmp_path, comfyui, free_port())) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_media_kinds_by_content(tmp_path):
    for data, kind in [(b"\xff\xd8\xff\xe0JFIF", "image"), (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image"),
                       (b"RIFF\x00\x00\x00\x00AVI LIST", "video"), (b"\x1a\x45\xdf\xa3webm", "video"),
                       (b"\x00\x00\x00\x1cftypavif", "image"), (b"\x00\x00\x00\x14ftypqt  ", "video"),
                       (b"RIFF\x00\x00\x00\x00WAVEfmt ", None), (b"", None)]:
        path = tmp_path / "file"
        path.write_bytes(data)
        assert run.media_kind(path) == kind, data



def test_a_missing_comfyui_folder_is_named(job, capsys):
    tmp_path, _, _ = job
    assert run.main(_args(tmp_path, tmp_path / "nowhere", free_port())) == 1
    assert f"ComfyUI folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert run.main(_args(tmp_path, tmp_path / "wf", free_port())) == 1
    assert "is not a ComfyUI folder: it has no main.py" in capsys.readouterr().err


def test_missing_models_are_named_with_their_urls(job, capsys):
    tmp_path, comfyui, files = job
    with StubComfyUI() as stub:
        stub.models_dir = comfyui / "models"
        assert run.main(_args(tmp_path, comfyui, stub.httpd.server_address[1])) == 1
        err = capsys.readouterr().err
        assert stub.uploads == {} and stub.prompts == {}
    assert f"2 model file(s) the workflow needs are not in {comfyui / 'models'}:" in err
    assert f"dit.safetensors  ->  models/diffusion_models/  from {files.url}/resolve/dit.safetensors" in err
    assert f"det.onnx  ->  models/detection/  from {files.url}/det.onnx" in err
    assert "Run again with --download" in err
    assert files.requests == []


def test_download_fetches_missing_models_then_runs_the_job(job, capsys):
    tmp_path, comfyui, files = job
    with StubComfyUI() as stub:
        stub.models_dir = comfyui / "models"
        code = run.main(_args(tmp_path, comfyui, stub.httpd.server_address[1], "--download"))
        captured = capsys.readouterr()
        assert code == 0, captured.err
        (prompt,) = stub.prompts.values()
    assert (comfyui / "models" / "diffusion_models" / "dit.safetensors").read_bytes() == DIT
    assert (comfyui / "models" / "detection" / "det.onnx").read_bytes() == DETECTOR
    assert sorted(p.name for p in (comfyui / "models").rglob("*.part")) == []
    assert stub.uploads == {"char.png": PNG, "drive.mp4": MP4}
    assert (prompt["1"]["inputs"]["image"], prompt["2"]["inputs"]["file"]) == ("char.png", "drive.mp4")
    assert captured.out.splitlines() == [str(tmp_path / "results" / "wan_00001_.png")]
    assert "using the ComfyUI already running at" in captured.err
    assert "running Character image" not in captured.err  # the stub has no websocket: no node progress


def test_a_download_with_a_wrong_hash_stops_the_job(job, capsys):
    tmp_path, comfyui, files = job
    files.files["/cdn/dit"] = Served(DIT[:-1] + b"!")
    with StubComfyUI() as stub:
        stub.models_dir = comfyui / "models"
        assert run.main(_args(tmp_path, comfyui, stub.httpd.server_address[1], "--download", "--quiet")) == 1
        assert stub.prompts == {}
    assert "does not match the published" in capsys.readouterr().err
    assert not (comfyui / "models" / "diffusion_models" / "dit.safetensors").exists()


def test_the_servers_error_message_is_shown(job, capsys):
    tmp_path, comfyui, _ = job
    with StubComfyUI() as stub:
        stub.models_dir = comfyui / "models"
        for folder, name, data in (("diffusion_models", "dit.safetensors", DIT), ("detection", "det.onnx", DETECTOR)):
            (comfyui / "models" / folder).mkdir(exist_ok=True)
            (comfyui / "models" / folder / name).write_bytes(data)
        stub.failure = {"node_id": "11", "node_type": "WanAnimatePreprocess", "exception_type": "ValueError",
                        "exception_message": "character image: no person found (detector score below 0.5)"}
        assert run.main(_args(tmp_path, comfyui, stub.httpd.server_address[1], "--quiet")) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("error: ComfyUI failed while running node 11 [WanAnimatePreprocess]: ValueError: "
                           "character image: no person found (detector score below 0.5)")


def test_a_server_without_the_pack_is_named(job, capsys):
    tmp_path, comfyui, _ = job
    with StubComfyUI() as stub:
        stub.node_types = {"LoadImage", "LoadVideo", "SaveImage"}
        assert run.main(_args(tmp_path, stub.url, 0)) == 1
    err = capsys.readouterr().err
    assert "has no node WanAnimateModelLoader, WanAnimatePoseModelLoader: the pack is not loaded there" in err


def test_download_needs_the_folder(job, capsys):
    tmp_path, _, _ = job
    with StubComfyUI() as stub:
        assert run.main(_args(tmp_path, stub.url, 0, "--download")) == 1
    assert "--download needs --comfyui to be the ComfyUI folder" in capsys.readouterr().err


def test_it_starts_comfyui_with_the_pack_linked_and_stops_it(job, capsys):
    """The folder's main.py is the stub server: started, used for the whole job, stopped at the end."""
    tmp_path, comfyui, _ = job
    stub_script = Path(__file__).resolve().parent / "comfyui_stub.py"
    (comfyui / "main.py").write_text(
        f"import runpy, sys\nsys.path.insert(0, {str(stub_script.parent)!r})\n"
        f"runpy.run_path({str(stub_script)!r}, run_name='__main__')\n")
    for folder, name, data in (("diffusion_models", "dit.safetensors", DIT), ("detection", "det.onnx", DETECTOR)):
        (comfyui / "models" / folder).mkdir()
        (comfyui / "models" / folder / name).write_bytes(data)
    port = free_port()
    code = run.main(_args(tmp_path, comfyui, port, "--python", sys.executable, "--comfyui-args=--cpu --lowvram"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (comfyui / "custom_nodes" / "comfyui-wan-animate").resolve() == REPO_ROOT
    log = (tmp_path / "results" / "wan_animate_comfyui.log").read_text()
    assert f"argv ['--listen', '127.0.0.1', '--port', '{port}', '--cpu', '--lowvram']" in log
    assert "stopping the ComfyUI this command started" in captured.err
    assert run.comfyui_answers(f"http://127.0.0.1:{port}") is None  # stopped
    assert (tmp_path / "results" / "wan_00001_.png").is_file()


def test_a_comfyui_that_fails_to_start_shows_its_log(job, capsys):
    tmp_path, comfyui, _ = job
    (comfyui / "main.py").write_text("import sys\nprint('ModuleNotFoundError: No module named torch')\nsys.exit(3)\n")
    assert run.main(_args(tmp_path, comfyui, free_port())) == 1
    err = capsys.readouterr().err
    assert "ComfyUI exited with code 3 while starting" in err and "No module named torch" in err


def test_a_foreign_pack_link_is_not_replaced(job, capsys):
    tmp_path, comfyui, _ = job
    (comfyui / "custom_nodes").mkdir()
    (comfyui / "custom_nodes" / "comfyui-wan-animate").symlink_to(tmp_path / "wf", target_is_directory=True)
    assert run.main(_args(tmp_path, comfyui, free_port())) == 1
    err = capsys.readouterr().err
    assert f"{comfyui / 'custom_nodes' / 'comfyui-wan-animate'} exists but is not this checkout" in err
    assert (comfyui / "custom_nodes" / "comfyui-wan-animate").resolve() == tmp_path / "wf"


def test_progress_names_nodes_by_their_titles():
    stream = io.StringIO()
    progress = run.RunProgress(API, stream)
    for event, data in [("execution_start", {"prompt_id": "p"}), ("executing", {"node": "1"}),
                        ("executing", {"node": "3"}), ("progress", {"node": "3", "value": 1, "max": 2}),
                        ("progress", {"node": "3", "value": 2, "max": 2}), ("executing", {"node": None})]:
        progress(event, data)
    assert stream.getvalue().splitlines() == ["ComfyUI started the job", "running Character image",
                                              "running WanAnimateModelLoader", "  WanAnimateModelLoader: 1/2",
                                              "  WanAnimateModelLoader: 2/2"]


@pytest.mark.parametrize("name,directory", [("../../evil.safetensors", "loras"), ("/tmp/evil.safetensors", "loras"),
                                            ("evil.safetensors", "../outside"), ("evil.safetensors", "/tmp")])
def test_a_workflow_cannot_download_outside_the_models_folder(tmp_path, name, directory):
    from wan_animate.safe_files import UnsafePath
    from wan_animate.workflow_files import ModelFile

    comfyui = tmp_path / "ComfyUI"
    (comfyui / "models" / "loras").mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UnsafePath):
        run.fetch_models([ModelFile(name, directory, "http://127.0.0.1:9/evil")], comfyui, quiet=True)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written anywhere


def test_a_models_folder_that_is_a_symlink_to_another_disk_receives_the_download(job, capsys):
    """Users link models/diffusion_models to a big disk: that folder is their choice, and the file lands there."""
    tmp_path, comfyui, files = job
    big_disk = tmp_path / "big_disk" / "wan_models"
    big_disk.mkdir(parents=True)
    (comfyui / "models" / "diffusion_models").symlink_to(big_disk, target_is_directory=True)
    with StubComfyUI() as stub:
        stub.models_dir = comfyui / "models"
        code = run.main(_args(tmp_path, comfyui, stub.httpd.server_address[1], "--download", "--quiet"))
        assert code == 0, capsys.readouterr().err
    assert (big_disk / "dit.safetensors").read_bytes() == DIT
    assert (comfyui / "models" / "diffusion_models").is_symlink()  # still the user's link, not replaced
    assert (comfyui / "models" / "detection" / "det.onnx").read_bytes() == DETECTOR


def test_a_name_cannot_leave_its_folder_through_a_symlink_inside_it(tmp_path):
    """The declared folder is one name under models/ whose own link is followed; below it, the declared file name
    must stay inside that folder, and a declared folder of several parts is refused."""
    from wan_animate.safe_files import UnsafePath
    from wan_animate.workflow_files import ModelFile

    comfyui, elsewhere = tmp_path / "ComfyUI", tmp_path / "elsewhere"
    (comfyui / "models" / "loras").mkdir(parents=True)
    elsewhere.mkdir()
    (comfyui / "models" / "loras" / "shared").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(tmp_path.rglob("*"))
    for name, directory, message in [("shared/evil.safetensors", "loras", "outside"),
                                     ("evil.safetensors", "loras/shared", "one folder name")]:
        with pytest.raises(UnsafePath, match=message):
            run.fetch_models([ModelFile(name, directory, "http://127.0.0.1:9/evil")], comfyui, quiet=True)
    assert sorted(tmp_path.rglob("*")) == before
