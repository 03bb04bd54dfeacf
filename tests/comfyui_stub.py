"""A loopback stand-in for ComfyUI's HTTP API (no websocket: clients poll /history), for the offline client and
run-command tests. `python3 tests/comfyui_stub.py --port N` serves one in the foreground (a fake ComfyUI main.py)."""
from __future__ import annotations

import json
import sys
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from file_server import LoopbackServer


class StubComfyUI(LoopbackServer):
    """Just enough of ComfyUI's HTTP API: uploads, /prompt (with rejection), /history (with failure), /view.

    Uploads follow ComfyUI 0.8's rule: without overwrite=true an identical file keeps its name and a different one
    gets 'name (N).ext'. `outputs` are the file references /history reports; `broken` maps a route ("/system_stats",
    "/prompt", "/history") to a raw (status, body) answer that replaces the normal one. `models_dir`, when set, is
    the models folder GET /models/<folder> lists; `node_types`, when set, the only classes /object_info/<class> knows;
    `failure`, when set, the execution_error every prompt ends with.
    """

    def __init__(self, port: int = 0):
        self.uploads: dict[str, bytes] = {}
        self.upload_fields: list[dict] = []
        self.prompts: dict[str, dict] = {}
        self.files = {"wan_00001_.png": b"\x89PNG fake output"}
        self.outputs = [{"filename": "wan_00001_.png", "subfolder": "", "type": "output"}]
        self.broken: dict[str, tuple[int, bytes]] = {}
        self.models_dir: Path | None = None
        self.node_types: set[str] | None = None
        self.failure: dict | None = None
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

            def _raw(self, status, data):
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _broken(self, path):
                route = "/history" if path.startswith("/history/") else path
                if route in stub.broken:
                    self._raw(*stub.broken[route])
                    return True
                return False

            def do_GET(self):
                url = urlparse(self.path)
                if self._broken(url.path):
                    return
                if url.path == "/system_stats":
                    return self._json(200, {"system": {}})
                if url.path.startswith("/history/"):
                    prompt_id = url.path.rsplit("/", 1)[1]
                    return self._json(200, stub.history(prompt_id))
                if url.path.startswith("/models/"):
                    return self._json(200, stub.model_list(unquote(url.path.removeprefix("/models/"))))
                if url.path.startswith("/object_info/"):
                    class_type = unquote(url.path.removeprefix("/object_info/"))
                    known = stub.node_types is None or class_type in stub.node_types
                    return self._json(200, {class_type: {"input": {}}} if known else {})
                if url.path == "/view":
                    name = parse_qs(url.query)["filename"][0]
                    return self._raw(200, stub.files[name])
                self._json(404, {})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self._broken(self.path):
                    return
                if self.path == "/upload/image":
                    raw = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
                    form = BytesParser(policy=HTTP).parsebytes(raw)
                    fields = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
                    stub.upload_fields.append({k: v.get_content() for k, v in fields.items() if k != "image"})
                    name = stub.store_upload(fields["image"].get_filename(), fields["image"].get_payload(decode=True),
                                             fields.get("overwrite") is not None
                                             and fields["overwrite"].get_content().strip() in ("true", "1"))
                    return self._json(200, {"name": name, "subfolder": "", "type": "input"})
                if self.path == "/prompt":
                    request = json.loads(body)
                    prompt = request["prompt"]
                    if any(node["class_type"] == "Reject" for node in prompt.values()):
                        return self._json(400, {
                            "error": {"type": "prompt_outputs_failed_validation",
                                      "message": "Prompt outputs failed validation"},
                            "node_errors": {"5": {"class_type": "Reject", "errors": [
                                {"message": "Value not in list", "details": "mode: 'x' not in ['a']"}]}},
                        })
                    prompt_id = uuid.uuid4().hex
                    stub.prompts[prompt_id] = prompt
                    return self._json(200, {"prompt_id": prompt_id, "number": 1, "node_errors": {}})
                self._json(404, {})

        self._listen(Handler, port)

    def store_upload(self, name: str, data: bytes, overwrite: bool) -> str:
        stem, dot, suffix = name.rpartition(".")
        index = 0
        while not overwrite and name in self.uploads and self.uploads[name] != data:
            index += 1
            name = f"{stem} ({index}){dot}{suffix}"
        self.uploads[name] = data
        return name

    def model_list(self, folder: str) -> list[str]:
        """Files of models_dir/<folder> (and ComfyUI's legacy names for two folders), as /models/<folder> lists."""
        if self.models_dir is None:
            return []
        folders = {"diffusion_models": ["diffusion_models", "unet"], "text_encoders": ["text_encoders", "clip"]}
        names = set()
        for name in folders.get(folder, [folder]):
            root = self.models_dir / name
            if root.is_dir():
                names |= {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        return sorted(n for n in names if not n.endswith(".part"))

    def history(self, prompt_id: str) -> dict:
        prompt = self.prompts[prompt_id]
        error = self.failure
        if any(node["class_type"] == "Boom" for node in prompt.values()):
            error = {"node_id": "6", "node_type": "Boom", "exception_type": "ValueError",
                     "exception_message": "driving video has 3 frames; at least 5 are needed", "traceback": []}
        if error is not None:
            return {prompt_id: {"outputs": {}, "status": {"status_str": "error", "completed": False,
                                                          "messages": [["execution_error", error]]}}}
        return {prompt_id: {"outputs": {"4": {"images": self.outputs}},
                            "status": {"status_str": "success", "completed": True, "messages": []}}}


def serve_forever(argv: list[str]) -> None:
    """A fake ComfyUI main.py: `--port N` (other ComfyUI arguments are ignored); models/ of the cwd are listed."""
    port = int(argv[argv.index("--port") + 1])
    stub = StubComfyUI(port)
    stub.models_dir = Path.cwd() / "models"
    print(f"stub ComfyUI on port {port}, argv {argv}", flush=True)
    stub.httpd.serve_forever()


if __name__ == "__main__":
    serve_forever(sys.argv[1:])
