"""The main job in one command: a character image and a driving video in, the animated video out.

    python3 -m wan_animate.run --comfyui ~/ComfyUI --workflow animate --image char.png --video drive.mp4 \
        --out results --download

Steps:
1. check the arguments: the workflow (`animate`, `replace`, `long_video`, `low_vram`, `tpose_kontext`, or a path to
   an API-format .json), that --image is an image and --video a video, the --set/--image-node/--video-node overrides;
2. find ComfyUI: a URL is used as it is; for a folder, a ComfyUI already answering on 127.0.0.1:--port is used,
   otherwise `main.py` is started headless there with --python, after linking this pack into its custom_nodes
   (its log: --out/wan_animate_comfyui.log);
3. check that ComfyUI has the pack's nodes and every model file the workflow declares (workflows/NAME.json lists
   them with their URLs); with --download the missing ones are fetched into the folder's models/<subfolder>/
   (followed where it is a symlink; resumable, size- and sha256-checked; see wan_animate/download.py and
   safe_files.model_file_path), otherwise each is named with its URL;
4. upload the image and video (never over a server file), queue the workflow, show progress, download the
   results into --out (never over a file there unless --overwrite), and stop the ComfyUI it started.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import urllib.parse
from pathlib import Path

from wan_animate import client as comfy
from wan_animate.comfyui_process import (
    ComfyUIStartError,
    StartedComfyUI,
    check_comfyui_folder,
    comfyui_answers,
    link_pack,
    start_comfyui,
)
from wan_animate.download import DownloadError, ProgressBar, download_file
from wan_animate.safe_files import model_file_path
from wan_animate.workflow_files import ModelFile, choose_workflow, models_folder_candidates

# (format, prefixes any of which the file starts with); "RIFF" formats are told apart by bytes 8-11
IMAGE_SIGNATURES = [("PNG", (b"\x89PNG\r\n\x1a\n",)), ("JPEG", (b"\xff\xd8\xff",)), ("GIF", (b"GIF87a", b"GIF89a")),
                    ("BMP", (b"BM",)), ("TIFF", (b"II*\x00", b"MM\x00*")), ("WebP", (b"RIFF",))]
VIDEO_SIGNATURES = [("MP4/MOV", ()), ("Matroska/WebM", (b"\x1a\x45\xdf\xa3",)), ("AVI", (b"RIFF",)),
                    ("FLV", (b"FLV",)), ("MPEG", (b"\x00\x00\x01\xba",))]
RIFF_KINDS = {b"WEBP": "image", b"AVI ": "video"}
STILL_IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1")  # ISO-BMFF brands of still images


class RunError(RuntimeError):
    """A problem the user can fix; the message says how."""


def media_kind(path: Path) -> str | None:
    """'image' or 'video' from the file's first bytes (not its name), None when it is neither."""
    with open(path, "rb") as file:
        head = file.read(16)
    if head[4:8] == b"ftyp":  # ISO base media: MP4, MOV, or a still AVIF/HEIC image
        return "image" if head[8:12] in STILL_IMAGE_BRANDS else "video"
    if head.startswith(b"RIFF"):
        return RIFF_KINDS.get(head[8:12])
    for kind, signatures in (("image", IMAGE_SIGNATURES), ("video", VIDEO_SIGNATURES)):
        if any(head.startswith(prefix) for _, prefixes in signatures for prefix in prefixes):
            return kind
    return None


def check_media(value: str, kind: str) -> Path:
    """The --image/--video path, refusing missing files and files whose contents are not that kind of media."""
    path = comfy.check_input_file(value, kind)
    found = media_kind(path)
    if found == kind:
        return path
    formats = ", ".join(name for name, _ in (IMAGE_SIGNATURES if kind == "image" else VIDEO_SIGNATURES))
    what = {"image": "an image", "video": "a video"}.get(found, "neither an image nor a video")
    raise RunError(f"--{kind} {path} is {what}; expected {'an' if kind == 'image' else 'a'} {kind} ({formats})")


def is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https")


def check_nodes(client: comfy.ComfyClient, workflow: dict) -> None:
    """Every class_type of the workflow is known to the server, or an error that says the pack is not loaded."""
    missing = sorted({node["class_type"] for node in workflow.values()
                      if not client.get_json(f"/object_info/{urllib.parse.quote(node['class_type'])}")})
    if missing:
        raise RunError(
            f"ComfyUI at {client.server} has no node {', '.join(missing)}: the pack is not loaded there. Check the "
            f"ComfyUI log for 'IMPORT FAILED' next to this pack; a ComfyUI that was already running must be "
            f"restarted after the pack is linked into its custom_nodes folder."
        )


def listed_models(client: comfy.ComfyClient, directory: str) -> set[str]:
    """The files ComfyUI lists for one models/ subfolder (empty when it does not know the subfolder)."""
    try:
        names = client.get_json(f"/models/{urllib.parse.quote(directory)}")
    except comfy.ServerUnreachable:
        raise
    except comfy.ComfyUIError:  # 404: no such model folder registered
        return set()
    return {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()


def missing_models(client: comfy.ComfyClient, models: list[ModelFile]) -> list[ModelFile]:
    listings = {directory: listed_models(client, directory) for directory in {m.directory for m in models}}
    return [m for m in models if m.name not in listings[m.directory]]


def describe_missing(missing: list[ModelFile], comfyui: Path | None) -> str:
    """The missing files with their URLs and folders; `comfyui` is the folder holding models/, None for a URL."""
    root = f"{comfyui / 'models'}" if comfyui is not None else "ComfyUI's models folder"
    lines = [f"{len(missing)} model file(s) the workflow needs are not in {root}:"]
    for m in missing:
        lines.append(f"  - {m.name}  ->  models/{m.directory}/  from {m.url or '(no download link declared)'}")
    if comfyui is not None:
        lines.append("Run again with --download to fetch them there, or download them by hand.")
    else:
        lines.append("Download them into that ComfyUI's models folder, or give --comfyui its folder and --download.")
    return "\n".join(lines)


def fetch_models(missing: list[ModelFile], comfyui: Path, quiet: bool = False) -> None:
    """Download each missing model into comfyui/models/<directory>/<name>."""
    models_root = comfyui / "models"
    for m in missing:
        if not m.url:
            raise RunError(f"{m.name} has no download link in the workflow; put it in models/{m.directory}/ by hand")
        target = model_file_path(models_root, m.directory, m.name)
        if any((folder / m.name).is_file() for folder in models_folder_candidates(models_root, m.directory)):
            continue  # on disk, but not listed by the server: reported by the check after the downloads
        print(f"downloading {m.name} into {target.parent}", file=sys.stderr, flush=True)
        download_file(m.url, target, sha256=m.sha256, progress=None if quiet else ProgressBar(m.name))


def ensure_models(client: comfy.ComfyClient, models: list[ModelFile], comfyui: Path | None, download: bool,
                  quiet: bool = False) -> None:
    """Every declared model is listed by ComfyUI, after downloading the missing ones when asked to."""
    missing = missing_models(client, models)
    if not missing:
        return
    if not download or comfyui is None:
        raise RunError(describe_missing(missing, comfyui) + ("" if comfyui is not None or not download else
                       "\n(--download needs --comfyui to be the ComfyUI folder, not a URL)"))
    fetch_models(missing, comfyui, quiet)
    still = missing_models(client, missing)
    if still:
        raise RunError(f"ComfyUI at {client.server} does not list {', '.join(m.name for m in still)} although the "
                       f"file is in {comfyui / 'models'}: is that server using another models folder?")


class RunProgress:
    """Progress lines naming nodes by their titles: 'running Sampler', '  Sampler: 3/20' (one updating line on a
    terminal)."""

    def __init__(self, workflow: dict, stream=None):
        self.titles = {node_id: (node.get("_meta") or {}).get("title") or node["class_type"]
                       for node_id, node in workflow.items()}
        self.stream = stream or sys.stderr
        self.interactive = getattr(self.stream, "isatty", lambda: False)()

    def __call__(self, event: str, data: dict) -> None:
        node = str(data.get("node"))
        title = self.titles.get(node, node)
        if event == "execution_start":
            print("ComfyUI started the job", file=self.stream, flush=True)
        elif event == "executing" and data.get("node") is not None:
            print(f"running {title}", file=self.stream, flush=True)
        elif event == "progress":
            done = data.get("value") == data.get("max")
            end = "\r" if self.interactive and not done else "\n"
            print(f"  {title}: {data.get('value')}/{data.get('max')}", end=end, file=self.stream, flush=True)


def base_directory(comfyui: Path, comfyui_args: list[str]) -> Path:
    """Where ComfyUI keeps custom_nodes/ and models/: its folder, or the --base-directory among its arguments."""
    for index, arg in enumerate(comfyui_args):
        if arg == "--base-directory" and index + 1 < len(comfyui_args):
            return Path(comfyui_args[index + 1]).expanduser().resolve()
        if arg.startswith("--base-directory="):
            return Path(arg.split("=", 1)[1]).expanduser().resolve()
    return comfyui


def run(args: argparse.Namespace) -> list[Path]:
    """The whole job; returns the files written into --out."""
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    choice = choose_workflow(args.workflow)
    files = {"image": check_media(args.image, "image"), "video": check_media(args.video, "video")}
    assignments = [comfy.parse_assignment(text) for text in args.set]
    explicit = {k: v for k, v in (("image", args.image_node), ("video", args.video_node)) if v}
    comfy.patch_workflow(choice.api, {kind: path.name for kind, path in files.items()}, explicit, assignments)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir} is a file, not a folder")
    comfyui = None if is_url(args.comfyui) else check_comfyui_folder(Path(args.comfyui))
    comfyui_args = shlex.split(args.comfyui_args)
    base = base_directory(comfyui, comfyui_args) if comfyui is not None else None
    started: StartedComfyUI | None = None
    try:
        if comfyui is None:
            url = args.comfyui
        else:
            url = f"http://127.0.0.1:{args.port}"
            state = comfyui_answers(url)
            if state is False:
                raise RunError(f"something other than ComfyUI answers on port {args.port}; choose a free --port")
            if state:
                say(f"using the ComfyUI already running at {url}")
            else:
                link = link_pack(base)
                say(f"starting ComfyUI in {comfyui} on {url} (pack: {link}) ...")
                started = start_comfyui(comfyui, args.port, out_dir, args.python, comfyui_args,
                                        timeout=args.startup_timeout)
                say(f"ComfyUI is up; its log is {started.log_path}")
        client = comfy.ComfyClient(url, timeout=args.http_timeout)
        client.check_server()
        check_nodes(client, choice.api)
        ensure_models(client, choice.models, base, args.download, args.quiet)
        uploads = {kind: client.upload(path, kind) for kind, path in files.items()}
        patched = comfy.patch_workflow(choice.api, uploads, explicit, assignments)
        say(f"queueing {choice.api_path.name} with {uploads['image']} and {uploads['video']}")
        _, entry = client.run_prompt(patched, timeout=args.timeout,
                                     on_event=None if args.quiet else RunProgress(choice.api))
        return comfy.download_outputs(client, entry, out_dir, overwrite=args.overwrite)
    finally:
        if started is not None:
            say("stopping the ComfyUI this command started")
            started.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m wan_animate.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--comfyui", required=True, help="ComfyUI folder (holding main.py) or URL of a running one")
    parser.add_argument("--workflow", default="animate",
                        help="animate, replace, long_video, low_vram, tpose_kontext, or a path to an API-format "
                             "workflow .json")
    parser.add_argument("--image", required=True, help="the character image")
    parser.add_argument("--video", required=True, help="the driving video")
    parser.add_argument("--out", default="results", help="folder for the results (default: results)")
    parser.add_argument("--download", action="store_true", help="download missing model files into the folder")
    parser.add_argument("--port", type=int, default=8188, help="port of the local ComfyUI to use or start")
    parser.add_argument("--python", default=sys.executable, help="Python that runs ComfyUI (default: this one)")
    parser.add_argument("--comfyui-args", default="", metavar="ARGS",
                        help="extra arguments for a ComfyUI this command starts, e.g. --comfyui-args='--lowvram'; "
                             "with --base-directory the pack is linked and models are downloaded there")
    comfy.add_job_arguments(parser)
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for ComfyUI to start")
    parser.add_argument("--quiet", action="store_true", help="print only the result paths")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        files = comfy.run_and_print(lambda: run(args), (RunError, comfy.ComfyUIError, ComfyUIStartError,
                                                         DownloadError, ValueError, OSError))
    except KeyboardInterrupt:
        print("interrupted; a model download resumes when run again", file=sys.stderr)
        return 130
    return 0 if files else 1  # None: an error; []: no output files


if __name__ == "__main__":
    sys.exit(main())
