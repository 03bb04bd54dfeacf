// Wan Animate points editor: click on the driving video's first frame, on the Preprocess node, to guide SAM2's mask.
//
// Left click adds a positive point (the person to replace), right click a negative one (something the mask must
// leave out); shift + left click picks the person to follow (the node's `person` widget becomes "point X Y").
// The points live in the node's `points` STRING widget (hidden; saved with the workflow) as JSON
// {"positive": [[x, y], ...], "negative": [[x, y], ...]}, x and y fractions 0..1 of the frame's width and height,
// which Preprocess adds to SAM2's prompts of the first frame (wan_animate/preprocess/masks.py, parse_user_points).
// The frame shown is the first frame of the file loaded upstream of `driving_video` (Load Video / Load Image).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION_NAME = "WanAnimate.PointsEditor";
const NODE_NAME = "WanAnimatePreprocess";
const CUSTOM_NODE_MODULE = "custom_nodes.";
const POINTS_WIDGET = "points";
const PERSON_WIDGET = "person";
const EDITOR_WIDGET = "wan_animate_points_editor";
const SOURCE_INPUT = "driving_video";
const FILE_WIDGETS = ["file", "video", "image"]; // Load Video's `file`, Load Image's `image`, other packs' `video`
const VIDEO_SUFFIX = /\.(mp4|webm|mov|mkv|avi|m4v|gif)$/i;
const EDITOR_HEIGHT = 240;
const STYLE_ID = "wan-animate-points-style";

const STYLE = `
.wan-animate-points { display: flex; flex-direction: column; gap: 4px; width: 100%; height: 100%;
  box-sizing: border-box; padding: 2px; font: 11px sans-serif; color: var(--input-text, #ddd); }
.wan-animate-points .wa-points-head { display: flex; align-items: center; gap: 6px; }
.wan-animate-points .wa-points-head span { flex: 1; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.wan-animate-points button { font: inherit; padding: 0 6px; cursor: pointer; }
.wan-animate-points .wa-points-frame { flex: 1; min-height: 0; display: flex; justify-content: center;
  align-items: center; background: #111; border-radius: 4px; }
.wan-animate-points .wa-points-stage { position: relative; display: inline-block; max-width: 100%; max-height: 100%; }
.wan-animate-points .wa-points-media { display: block; height: ${EDITOR_HEIGHT - 56}px; width: auto;
  max-width: 100%; object-fit: fill; cursor: crosshair; user-select: none; }
.wan-animate-points .wa-point { position: absolute; width: 10px; height: 10px; margin: -7px 0 0 -7px;
  border-radius: 50%; border: 2px solid #fff; box-shadow: 0 0 2px #000; pointer-events: none; }
.wan-animate-points .wa-point[data-label="1"] { background: #3c3; }
.wan-animate-points .wa-point[data-label="0"] { background: #e33; }
.wan-animate-points .wa-point[data-label="person"] { background: #39f; border-radius: 2px; }
`;

function ensureStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = STYLE;
  document.head.appendChild(style);
}

/** The points of the widget's JSON text; empty lists for empty or unreadable text. */
export function parsePoints(text) {
  try {
    const data = text ? JSON.parse(text) : {};
    const list = (entries) => (Array.isArray(entries) ? entries.filter((p) => Array.isArray(p) && p.length === 2) : []);
    return { positive: list(data.positive), negative: list(data.negative) };
  } catch {
    return { positive: [], negative: [] };
  }
}

const round = (value) => Math.round(Math.min(1, Math.max(0, value)) * 10000) / 10000;

/** The widget text after adding the point (x, y) (fractions of the frame) as positive or negative. */
export function addPoint(text, x, y, positive) {
  const points = parsePoints(text);
  points[positive ? "positive" : "negative"].push([round(x), round(y)]);
  return JSON.stringify(points);
}

/** The (x, y) of a person widget's "point X Y" choice, else null. */
export function personPoint(text) {
  const match = /^\s*point[\s,]+([\d.]+)[\s,]+([\d.]+)\s*$/i.exec(text ?? "");
  return match ? [Number(match[1]), Number(match[2])] : null;
}

/** The file shown for a node input: walk up the links from `inputName` to a node with a file widget. */
function sourceFile(node, inputName) {
  const seen = new Set();
  let current = node;
  let name = inputName;
  while (current && !seen.has(current.id)) {
    seen.add(current.id);
    const input = name ? current.inputs?.find((i) => i.name === name) : current.inputs?.find((i) => i.link != null);
    const links = current.graph?.links;
    const link = input?.link != null ? links?.get?.(input.link) ?? links?.[input.link] : null;
    if (!link) return null;
    current = current.graph.getNodeById(link.origin_id);
    const widget = current?.widgets?.find((w) => FILE_WIDGETS.includes(w.name) && typeof w.value === "string");
    if (widget?.value) return widget.value;
    name = null; // intermediate nodes (Get Video Components...): follow their first linked input
  }
  return null;
}

/** /view URL of an input-folder file as ComfyUI's upload widgets name it ("sub/dir/name.mp4 [input]"). */
function inputFileUrl(value) {
  const match = /^(.*?)(?: \[(input|output|temp)\])?$/.exec(value.trim());
  const path = match[1];
  const slash = path.lastIndexOf("/");
  const params = new URLSearchParams({
    filename: path.slice(slash + 1),
    subfolder: slash > -1 ? path.slice(0, slash) : "",
    type: match[2] ?? "input",
  });
  return api.apiURL(`/view?${params}`);
}

function placeholder() {
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 180;
  const context = canvas.getContext("2d");
  context.fillStyle = "#333";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = "#aaa";
  context.font = "13px sans-serif";
  context.textAlign = "center";
  context.fillText("connect a Load Video to driving_video", canvas.width / 2, canvas.height / 2);
  return canvas;
}

function mediaFor(file) {
  if (!file) return placeholder();
  const url = inputFileUrl(file);
  if (VIDEO_SUFFIX.test(file.replace(/ \[\w+\]$/, ""))) {
    const video = document.createElement("video");
    video.muted = true;
    video.preload = "auto";
    video.src = url;
    video.addEventListener("loadeddata", () => { video.currentTime = 0; }, { once: true });
    return video;
  }
  const image = document.createElement("img");
  image.src = url;
  image.draggable = false;
  return image;
}

/** The editor: a header (counts, undo, clear), the first frame, the points drawn on it. The frame fills its
 *  element (object-fit: fill), so a click's place in the element's box is its place in the frame. */
function buildEditor(node, pointsWidget, personWidget) {
  ensureStyle();
  const root = document.createElement("div");
  root.className = "wan-animate-points";
  const head = document.createElement("div");
  head.className = "wa-points-head";
  const counts = document.createElement("span");
  const undo = document.createElement("button");
  undo.textContent = "undo";
  const clear = document.createElement("button");
  clear.textContent = "clear";
  counts.title = "left click: a point on the person to replace; right click: a point the mask must leave out; " +
    "shift + left click: follow this person (sets `person`)";
  head.append(counts, undo, clear);
  const frame = document.createElement("div");
  frame.className = "wa-points-frame";
  const stage = document.createElement("div");
  stage.className = "wa-points-stage";
  frame.appendChild(stage);
  root.append(head, frame);

  let history = [];
  let file;
  let media;
  const setValue = (text) => {
    pointsWidget.value = text;
    pointsWidget.callback?.(text);
    draw();
    node.setDirtyCanvas?.(true, true);
  };
  const draw = () => {
    const points = parsePoints(pointsWidget.value);
    stage.querySelectorAll(".wa-point").forEach((dot) => dot.remove());
    const person = personPoint(personWidget?.value);
    for (const [label, list] of [["1", points.positive], ["0", points.negative], ["person", person ? [person] : []]]) {
      for (const [x, y] of list) {
        const dot = document.createElement("div");
        dot.className = "wa-point";
        dot.dataset.label = label;
        dot.style.left = `${x * 100}%`;
        dot.style.top = `${y * 100}%`;
        stage.appendChild(dot);
      }
    }
    root.dataset.positive = String(points.positive.length);
    root.dataset.negative = String(points.negative.length);
    counts.textContent = `SAM2 points: ${points.positive.length} person, ${points.negative.length} not`;
  };
  const click = (event, positive) => {
    event.preventDefault();
    event.stopPropagation();
    const rect = media.getBoundingClientRect();
    if (!rect.width || !rect.height) return;
    const x = (event.clientX - rect.left) / rect.width;
    const y = (event.clientY - rect.top) / rect.height;
    if (positive && event.shiftKey && personWidget) {
      personWidget.value = `point ${round(x)} ${round(y)}`;
      personWidget.callback?.(personWidget.value);
      draw();
      node.setDirtyCanvas?.(true, true);
      return;
    }
    history.push(pointsWidget.value ?? "");
    setValue(addPoint(pointsWidget.value, x, y, positive));
  };
  const refresh = () => {
    const current = sourceFile(node, SOURCE_INPUT);
    if (media && current === file) return;
    file = current;
    media?.remove();
    media = mediaFor(file);
    media.classList.add("wa-points-media");
    media.addEventListener("pointerdown", (event) => event.stopPropagation());
    media.addEventListener("click", (event) => click(event, true));
    media.addEventListener("contextmenu", (event) => click(event, false));
    stage.prepend(media);
    root.dataset.source = file ?? "";
  };
  undo.onclick = () => { if (history.length) setValue(history.pop()); };
  clear.onclick = () => { history.push(pointsWidget.value ?? ""); setValue(""); };
  root.refresh = refresh;
  root.draw = draw;
  refresh();
  draw();
  return root;
}

function isPreprocess(nodeData) {
  return nodeData?.name === NODE_NAME && Boolean(nodeData.python_module?.startsWith(CUSTOM_NODE_MODULE));
}

app.registerExtension({
  name: EXTENSION_NAME,
  nodeCreated(node) {
    if (!isPreprocess(node.constructor?.nodeData)) return;
    const pointsWidget = node.widgets?.find((w) => w.name === POINTS_WIDGET);
    if (!pointsWidget) return;
    pointsWidget.hidden = true; // edited through the editor; still saved with the workflow
    const element = buildEditor(node, pointsWidget, node.widgets.find((w) => w.name === PERSON_WIDGET));
    const editor = node.addDOMWidget(EDITOR_WIDGET, "wan_animate_points", element, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => EDITOR_HEIGHT,
    });
    editor.serialize = false;
    // the upstream file can change at any time (another video picked, links rewired): follow it while drawing
    const onDrawBackground = node.onDrawBackground;
    node.onDrawBackground = function () {
      const result = onDrawBackground?.apply(this, arguments);
      element.refresh();
      return result;
    };
    const onConfigure = node.onConfigure;
    node.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      element.draw(); // points loaded with a workflow
      return result;
    };
  },
});
