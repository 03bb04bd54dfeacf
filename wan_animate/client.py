"""Headless client: queue an API-format workflow on a running ComfyUI and download what it produced.

    python -m wan_animate.client --server http://127.0.0.1:8188 --workflow workflows/api/animate.json \
        --image char.png --video drive.mp4 --set 12.seed=7 --out outdir

Steps: upload the character image and the driving video through /upload/image (ComfyUI stores any file sent there in
its input folder), write the stored names into the workflow's loader nodes (rules below), apply the --set overrides,
POST /prompt with a client id, follow progress over the /ws websocket (or poll /history when the `websocket-client`
package is absent), then download every output file through /view.

Patch rules (which node input receives an uploaded file), in this order:
- `--image-node ID[.INPUT]` / `--video-node ID[.INPUT]` name the target explicitly;
- otherwise every node whose class_type and input name appear in IMAGE_TARGETS / VIDEO_TARGETS (core LoadImage.image,
  core LoadVideo.file) or whose class_type starts with "WanAnimate" and has an input named in PACK_IMAGE_INPUTS /
  PACK_VIDEO_INPUTS holding a file name (Load Embeddings' `file` is an embeddings file, never a video);
- `--set ID.INPUT=VALUE` runs last and wins (VALUE is read as JSON when it parses, else kept as a string).
An explicit target must be an input the node has in the workflow, holding a value (not a link).

Safety: every argument is validated before anything is sent; uploads never overwrite a file on the server (ComfyUI
stores a different file under a free name such as 'char (1).png', and that returned name is what the workflow gets);
downloads stay inside --out (names with '..', absolute names and symlinks that lead out are refused) and never
overwrite a file there unless --overwrite is given: a taken name becomes 'name (1).ext'.
Only the standard library and, when installed, `websocket-client` are used; it never imports ComfyUI.
"""
from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wan_animate.safe_files import confined_path, place_file

IMAGE_TARGETS = {"LoadImage": "image"}
VIDEO_TARGETS = {"LoadVideo": "file"}
PACK_PREFIX = "WanAnimate"
PACK_IMAGE_INPUTS = ("image", "character_image", "reference_image")
PACK_VIDEO_INPUTS = ("video", "driving_video")
OUTPUT_TYPES = ("output",)


class ComfyUIError(RuntimeError):
    """Any failure talking to ComfyUI or running the workflow."""


class ServerUnreachable(ComfyUIError):
    pass


class NotComfyUI(ComfyUIError):
    """The server answered, but not as ComfyUI does."""


class PromptRejected(ComfyUIError):
    """ComfyUI refused the workflow at validation (HTTP 400 from /prompt)."""

    def __init__(self, error: dict | str, node_errors: dict):
        self.error = error
        self.node_errors = node_errors
        super().__init__(format_prompt_rejection(error, node_errors))


class ExecutionFailed(ComfyUIError):
    """A node raised while the workflow ran."""

    def __init__(self, details: dict):
        self.details = details
        super().__init__(format_execution_error(details))


def format_prompt_rejection(error: dict | str, node_errors: dict) -> str:
    """ComfyUI's /prompt rejection as readable lines: the summary, then one line per node error."""
    if isinstance(error, dict):
        summary = error.get("message", "prompt rejected")
        if error.get("details"):
            summary += f": {error['details']}"
    else:
        summary = str(error)
    lines = [f"ComfyUI rejected the workflow: {summary}"]
    for node_id, entry in sorted(node_errors.items(), key=lambda item: str(item[0])):
        class_type = entry.get("class_type", "?")
        for reason in entry.get("errors", []):
            text = reason.get("message", "error")
            if reason.get("details"):
                text += f" ({reason['details']})"
            lines.append(f"  node {node_id} [{class_type}]: {text}")
    return "\n".join(lines)


def format_execution_error(details: dict) -> str:
    """An execution_error message as 'node ID [TYPE] raised TYPE: message', plus the traceback's last line."""
    node = f"node {details.get('node_id', '?')} [{details.get('node_type', '?')}]"
    exception = f"{details.get('exception_type', 'Exception')}: {details.get('exception_message', '').strip()}"
    text = f"ComfyUI failed while running {node}: {exception}"
    traceback = details.get("traceback") or []
    if traceback:
        text += f"\n  at {str(traceback[-1]).strip()}"
    return text


def parse_assignment(text: str) -> tuple[str, str, object]:
    """'12.seed=7' -> ('12', 'seed', 7); the value is JSON when it parses, else the raw string."""
    target, sep, raw = text.partition("=")
    node_id, dot, input_name = target.partition(".")
    if not sep or not dot or not node_id or not input_name:
        raise ValueError(f"--set expects NODE_ID.INPUT=VALUE, found {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return node_id, input_name, value


def _parse_target(text: str, default_input: str | None) -> tuple[str, str | None]:
    node_id, _, input_name = text.partition(".")
    return node_id, input_name or default_input


def find_targets(workflow: dict, kind: str) -> list[tuple[str, str]]:
    """(node id, input name) pairs that take the uploaded `kind` ('image' or 'video') under the default rules."""
    core = IMAGE_TARGETS if kind == "image" else VIDEO_TARGETS
    pack_inputs = PACK_IMAGE_INPUTS if kind == "image" else PACK_VIDEO_INPUTS
    targets = []
    for node_id, node in workflow.items():
        class_type = node.get("class_type", "")
        inputs = node.get("inputs", {})
        if class_type in core and core[class_type] in inputs:
            targets.append((node_id, core[class_type]))
        elif class_type.startswith(PACK_PREFIX):
            targets += [(node_id, name) for name in pack_inputs if isinstance(inputs.get(name), str)]
    return sorted(targets, key=lambda t: (len(t[0]), t[0], t[1]))


def patch_workflow(
    workflow: dict,
    uploads: dict[str, str],
    explicit: dict[str, str] | None = None,
    assignments: list[tuple[str, str, object]] = (),
) -> dict:
    """A copy of `workflow` with uploaded file names written into their loader nodes, then `assignments` applied.

    uploads: kind ('image'/'video') -> name as stored by ComfyUI. explicit: kind -> 'ID' or 'ID.INPUT' overriding the
    default rules. A kind with no target, or (without `explicit`) with several targets, is an error naming them.
    """
    patched = json.loads(json.dumps(workflow))
    explicit = explicit or {}
    for kind, stored_name in uploads.items():
        if kind in explicit:
            node_id, input_name = _parse_target(explicit[kind], None)
            if node_id not in patched:
                raise ValueError(f"--{kind}-node {explicit[kind]}: the workflow has no node {node_id}")
            if input_name is None:
                matches = find_targets({node_id: patched[node_id]}, kind)
                if len(matches) != 1:
                    raise ValueError(
                        f"--{kind}-node {node_id}: cannot tell which input takes the {kind}; use {node_id}.INPUT"
                    )
                input_name = matches[0][1]
            _check_explicit_input(patched, node_id, input_name, kind)
            targets = [(node_id, input_name)]
        else:
            targets = find_targets(patched, kind)
            if not targets:
                raise ValueError(
                    f"the workflow has no node that takes the {kind} (looked for {_rules_text(kind)}); "
                    f"name one with --{kind}-node ID.INPUT"
                )
            if len(targets) > 1:
                listed = ", ".join(f"{n}.{i} [{patched[n]['class_type']}]" for n, i in targets)
                raise ValueError(f"several nodes could take the {kind} ({listed}); choose one with --{kind}-node ID.INPUT")
        for node_id, input_name in targets:
            patched[node_id].setdefault("inputs", {})[input_name] = stored_name
    for node_id, input_name, value in assignments:
        if node_id not in patched:
            raise ValueError(f"--set {node_id}.{input_name}: the workflow has no node {node_id}")
        patched[node_id].setdefault("inputs", {})[input_name] = value
    return patched


def _check_explicit_input(workflow: dict, node_id: str, input_name: str, kind: str) -> None:
    node = workflow[node_id]
    inputs = node.get("inputs", {})
    where = f"--{kind}-node {node_id}.{input_name}: node {node_id} [{node.get('class_type', '?')}]"
    if input_name not in inputs:
        raise ValueError(f"{where} has no input {input_name!r} (its inputs: {', '.join(inputs) or 'none'})")
    if isinstance(inputs[input_name], list):
        raise ValueError(f"{where} input {input_name!r} is a link from node {inputs[input_name][0]}, not a file name")


def _rules_text(kind: str) -> str:
    core = IMAGE_TARGETS if kind == "image" else VIDEO_TARGETS
    pack_inputs = PACK_IMAGE_INPUTS if kind == "image" else PACK_VIDEO_INPUTS
    listed = [f"{c}.{i}" for c, i in core.items()] + [f"{PACK_PREFIX}*.{i}" for i in pack_inputs]
    return ", ".join(listed)


def output_files(history_entry: dict, types: tuple[str, ...] = OUTPUT_TYPES) -> list[dict]:
    """File references ({filename, subfolder, type}) in a /history entry's outputs, in node order."""
    outputs = history_entry.get("outputs", {})
    if not isinstance(outputs, dict) or not all(isinstance(v, dict) for v in outputs.values()):
        raise NotComfyUI(f"malformed /history entry: 'outputs' should map node ids to dicts, found {outputs!r:.200}")
    files = []
    for node_id in sorted(outputs, key=lambda n: (len(n), n)):
        for value in outputs[node_id].values():
            if not isinstance(value, list):
                continue
            for item in value:
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") in types:
                    files.append(item)
    return files


@dataclass
class ComfyClient:
    """A thin HTTP/websocket client for one ComfyUI server."""

    server: str
    timeout: float = 30.0
    use_websocket: bool = True  # False: poll /history only

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")
        self.client_id = uuid.uuid4().hex

    def _open(self, request: urllib.request.Request | str):
        url = request if isinstance(request, str) else request.full_url
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.server} ({url}): {reason}") from error

    def _request_json(self, request: urllib.request.Request | str, what: str):
        """The JSON answer to a request; HTTP errors and non-JSON answers become ComfyUIError naming `what`."""
        try:
            with self._open(request) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise ComfyUIError(f"{self.server} answered HTTP {error.code} ({error.reason}) to {what}") from error
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise NotComfyUI(
                f"{self.server} does not look like a ComfyUI server: {what} answered {raw[:80]!r}, not JSON"
            ) from error

    def get_json(self, route: str):
        return self._request_json(self.server + route, f"GET {route}")

    def check_server(self) -> dict:
        """GET /system_stats, refusing servers that answer it differently from ComfyUI; returns its answer."""
        try:
            stats = self.get_json("/system_stats")
        except (ServerUnreachable, NotComfyUI):
            raise
        except ComfyUIError as error:  # an HTTP error status
            raise NotComfyUI(f"{error}; is {self.server} a ComfyUI server?") from error
        if not isinstance(stats, dict) or not isinstance(stats.get("system"), dict):
            raise NotComfyUI(f"{self.server} does not look like a ComfyUI server: GET /system_stats answered "
                             f"{json.dumps(stats)[:120]}")
        return stats

    def upload(self, path: Path, kind: str = "input") -> str:
        """Upload a file (image or video) into ComfyUI's input folder; returns the name ComfyUI stored it under.

        Never overwrites: ComfyUI keeps an identical file's name and gives a different file a free one.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{kind} file {path} does not exist")
        boundary = uuid.uuid4().hex
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        quoted_name = path.name.replace("\\", "\\\\").replace('"', '\\"')
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{quoted_name}"\r\n'
            f"Content-Type: {mime}\r\n\r\n".encode() + path.read_bytes() + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        request = urllib.request.Request(
            self.server + "/upload/image", data=b"".join(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        stored = self._request_json(request, f"the upload of {path}")
        if not isinstance(stored, dict) or not isinstance(stored.get("name"), str) or not stored["name"]:
            raise NotComfyUI(f"the upload of {path} answered {json.dumps(stored)[:120]}, without the stored name")
        subfolder = stored.get("subfolder") or ""
        return f"{subfolder}/{stored['name']}" if subfolder else stored["name"]

    def queue(self, workflow: dict) -> str:
        """POST /prompt; returns the prompt id, raising PromptRejected with ComfyUI's node errors."""
        body = json.dumps({"prompt": workflow, "client_id": self.client_id}).encode()
        request = urllib.request.Request(
            self.server + "/prompt", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with self._open(request) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            try:
                answer = json.loads(error.read())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ComfyUIError(f"ComfyUI answered HTTP {error.code} to /prompt") from error
            if not isinstance(answer, dict):
                raise ComfyUIError(f"ComfyUI answered HTTP {error.code} to /prompt: {json.dumps(answer)[:200]}") \
                    from error
            node_errors = answer.get("node_errors")
            raise PromptRejected(answer.get("error", "prompt rejected"),
                                 node_errors if isinstance(node_errors, dict) else {}) from error
        try:
            answer = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise NotComfyUI(f"POST /prompt answered {raw[:80]!r}, not JSON; is {self.server} ComfyUI?") from error
        prompt_id = answer.get("prompt_id") if isinstance(answer, dict) else None
        if not isinstance(prompt_id, str) or not prompt_id:
            raise NotComfyUI(f"POST /prompt answered {json.dumps(answer)[:200]}, without a prompt_id")
        return prompt_id

    def history(self, prompt_id: str) -> dict | None:
        """The /history entry of a prompt, or None while it has not finished."""
        answer = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}")
        if not isinstance(answer, dict):
            raise NotComfyUI(f"GET /history/{prompt_id} answered {json.dumps(answer)[:200]}, not an object")
        entry = answer.get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            raise NotComfyUI(f"malformed /history entry for {prompt_id}: {json.dumps(entry)[:200]}")
        return entry

    def run_prompt(
        self, workflow: dict, timeout: float = 3600.0, on_event: Callable[[str, dict], None] | None = None
    ) -> tuple[str, dict]:
        """Queue a workflow and wait for it; returns (prompt id, /history entry).

        The websocket opens before the prompt is queued so that no progress message of a fast run is missed.
        """
        connection = self._open_websocket()
        try:
            prompt_id = self.queue(workflow)
            if connection is not None:
                self._follow_websocket(connection, prompt_id, timeout, on_event)
        finally:
            if connection is not None:
                connection.close()
        return prompt_id, self._finished_entry(prompt_id, timeout)

    def wait(self, prompt_id: str, timeout: float = 3600.0, on_event: Callable[[str, dict], None] | None = None) -> dict:
        """Wait for an already queued prompt; returns its /history entry, raising ExecutionFailed on a node error."""
        connection = self._open_websocket()
        if connection is not None:
            try:
                if self.history(prompt_id) is None:
                    self._follow_websocket(connection, prompt_id, timeout, on_event)
            finally:
                connection.close()
        return self._finished_entry(prompt_id, timeout)

    def _finished_entry(self, prompt_id: str, timeout: float) -> dict:
        """Poll /history until the prompt's entry exists (ComfyUI writes it when the prompt is done, failed or not)."""
        deadline = time.monotonic() + timeout
        entry = self.history(prompt_id)
        while entry is None:
            if time.monotonic() > deadline:
                raise ComfyUIError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
            time.sleep(0.5)
            entry = self.history(prompt_id)
        status = entry.get("status") or {}
        messages = status.get("messages", []) if isinstance(status, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, list) and len(m) == 2 for m in messages):
            raise NotComfyUI(f"malformed /history entry for {prompt_id}: status {json.dumps(status)[:200]}")
        for event, data in messages:
            data = data if isinstance(data, dict) else {}
            if event == "execution_error":
                raise ExecutionFailed(data)
            if event == "execution_interrupted":
                raise ComfyUIError(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}")
        if status.get("status_str") == "error":
            raise ComfyUIError(f"prompt {prompt_id} ended with status 'error' and no execution_error message")
        return entry

    def _open_websocket(self):
        """A connection to /ws for this client id, or None (disabled, `websocket-client` absent, or refused)."""
        if not self.use_websocket:
            return None
        try:
            import websocket  # the websocket-client package; without it /history is polled
        except ImportError:
            return None
        ws_url = "ws" + self.server[len("http"):] + f"/ws?clientId={self.client_id}"
        try:
            return websocket.create_connection(ws_url, timeout=self.timeout)
        except (OSError, websocket.WebSocketException):
            return None  # a proxy without websockets, an old server: /history is polled instead

    def _follow_websocket(self, connection, prompt_id: str, timeout: float, on_event) -> None:
        """Read /ws messages until the prompt finishes; errors and outputs are then read from /history."""
        import websocket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            connection.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
            try:
                raw = connection.recv()
            except websocket.WebSocketTimeoutException:
                if self.history(prompt_id) is not None:
                    return
                continue
            except websocket.WebSocketConnectionClosedException:
                return
            if not isinstance(raw, str):
                continue  # binary latent previews
            try:
                message = json.loads(raw)
            except json.JSONDecodeError:
                continue  # not a ComfyUI status message; the outcome is read from /history
            if not isinstance(message, dict) or not isinstance(message.get("data") or {}, dict):
                continue
            event, data = message.get("type"), message.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if on_event is not None:
                on_event(event, data)
            finished = event == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id
            if finished or event in ("execution_success", "execution_error", "execution_interrupted"):
                return

    def download(self, file_ref: dict, out_dir: Path, overwrite: bool = False) -> Path:
        """Fetch one output file through /view into out_dir, keeping its subfolder; returns where it was written.

        The server's subfolder/filename must stay inside out_dir (UnsafePath otherwise). An existing file is kept
        unless `overwrite`: the download then takes the next free 'name (N).ext'.
        """
        subfolder, filename = file_ref.get("subfolder") or "", file_ref.get("filename")
        target = confined_path(Path(out_dir), subfolder, filename)
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder,
                                        "type": file_ref.get("type", "output")})
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with self._open(f"{self.server}/view?{query}") as response, open(temporary, "xb") as file:
                while chunk := response.read(1 << 20):
                    file.write(chunk)
            return place_file(temporary, target, overwrite)
        except urllib.error.HTTPError as error:
            raise ComfyUIError(f"{self.server} answered HTTP {error.code} to the download of {filename}") from error
        finally:
            temporary.unlink(missing_ok=True)


def print_progress(event: str, data: dict) -> None:
    """The default progress printer (stderr)."""
    if event == "execution_start":
        print(f"started prompt {data.get('prompt_id')}", file=sys.stderr, flush=True)
    elif event == "executing" and data.get("node") is not None:
        print(f"running node {data['node']}", file=sys.stderr, flush=True)
    elif event == "progress":
        print(f"  node {data.get('node')}: {data.get('value')}/{data.get('max')}", file=sys.stderr, flush=True)


def load_api_workflow(path: Path) -> dict:
    """An API-format workflow file (node id -> {class_type, inputs}), with errors that name the file."""
    try:
        workflow = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the workflow {path}: {error}") from error
    if not isinstance(workflow, dict) or not all(
        isinstance(n, dict) and "class_type" in n and isinstance(n.get("inputs", {}), dict) for n in workflow.values()
    ):
        raise ValueError(f"{path} is not an API-format workflow (node id -> {{class_type, inputs}})")
    return workflow


def check_input_file(path: str | Path, kind: str) -> Path:
    """The path of an existing regular file given as --image/--video."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file {path} does not exist" if not path.exists()
                                else f"{kind} file {path} is not a regular file")
    return path


def run(args: argparse.Namespace) -> list[Path]:
    """Validate, upload, patch, queue, wait, download; returns the downloaded files.

    Everything that can be checked locally (workflow, --set, input files, patch targets, --out) is checked before the
    first request that changes anything on the server.
    """
    workflow = load_api_workflow(Path(args.workflow))
    assignments = [parse_assignment(text) for text in args.set]
    files = {kind: check_input_file(value, kind) for kind, value in (("image", args.image), ("video", args.video))
             if value}
    explicit = {k: v for k, v in (("image", args.image_node), ("video", args.video_node)) if v}
    patch_workflow(workflow, {kind: path.name for kind, path in files.items()}, explicit, assignments)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder")
    client = ComfyClient(args.server, timeout=args.http_timeout)
    client.check_server()
    uploads = {kind: client.upload(path, kind) for kind, path in files.items()}
    patched = patch_workflow(workflow, uploads, explicit, assignments)
    _, entry = client.run_prompt(patched, timeout=args.timeout, on_event=None if args.quiet else print_progress)
    return download_outputs(client, entry, out_dir, args.include_previews, args.overwrite)


def download_outputs(client: ComfyClient, entry: dict, out_dir: Path, include_previews: bool = False,
                     overwrite: bool = False) -> list[Path]:
    """Download a finished prompt's files into out_dir; every name is checked before the first file is written."""
    refs = output_files(entry, OUTPUT_TYPES + (("temp",) if include_previews else ()))
    for ref in refs:
        confined_path(out_dir, ref.get("subfolder") or "", ref.get("filename"))
    return [client.download(ref, out_dir, overwrite) for ref in refs]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wan_animate.client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI base URL")
    parser.add_argument("--workflow", required=True, help="API-format workflow JSON (workflows/api/*.json)")
    parser.add_argument("--image", help="character image to upload and patch into the workflow")
    parser.add_argument("--video", help="driving video to upload and patch into the workflow")
    parser.add_argument("--out", default="out", help="folder for the downloaded outputs")
    add_job_arguments(parser)
    parser.add_argument("--include-previews", action="store_true", help="also download temp (preview) images")
    parser.add_argument("--quiet", action="store_true", help="do not print progress")
    return parser


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this command and `wan_animate.run` share: input targets, overrides, --overwrite, timeouts."""
    parser.add_argument("--image-node", help="ID or ID.INPUT that receives the image (overrides the default rules)")
    parser.add_argument("--video-node", help="ID or ID.INPUT that receives the video (overrides the default rules)")
    parser.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE",
                        help="override one node input (VALUE parsed as JSON when possible); repeatable")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files of the same name in --out (default: keep them, save as 'name (1).ext')")
    parser.add_argument("--timeout", type=float, default=6 * 3600.0, help="seconds to wait for the run")
    parser.add_argument("--http-timeout", type=float, default=60.0, help="seconds for each HTTP request")


def run_and_print(job: Callable[[], list[Path]], errors: tuple[type[Exception], ...]) -> list[Path] | None:
    """Run a command's job and print each file it wrote; None (after `error: ...` on stderr) when it raised one of
    `errors`. A job that wrote nothing is said on stderr."""
    try:
        files = job()
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    for path in files:
        print(path)
    if not files:
        print("the workflow finished but produced no output files", file=sys.stderr)
    return files


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    files = run_and_print(lambda: run(args), (ComfyUIError, ValueError, OSError))  # UnsafePath is a ValueError
    return 1 if files is None else 0


if __name__ == "__main__":
    sys.exit(main())
