// Wan Animate frontend extension: frame-by-frame previews (pose skeleton, face crops, mask, ...) on the pack's nodes.
//
// Contract with the Python nodes (docs/COMFYUI_TESTING.md, "Preview contract"): a custom node (not ComfyUI core) whose
// class name starts with "WanAnimate" returns
//   {"ui": {"images": [refs...], "wan_animate_previews": [{"kind": "pose", "count": 81, "fps": 16}, ...]}, "result": ...}
// where `images` are ordinary ComfyUI image references ({filename, subfolder, type}, usually type "temp") and each
// group owns `count` consecutive images starting at its optional `start` index (default: right after the previous
// group). `kind` names the group ("pose" | "face" | "mask" or any other word); `fps` and `label` are optional.
// Without this extension ComfyUI still shows the images as its usual preview grid.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION_NAME = "WanAnimate.Previews";
const NODE_PREFIX = "WanAnimate";
const CUSTOM_NODE_MODULE = "custom_nodes."; // ComfyUI core has a WanAnimateToVideo node (comfy_extras): leave it alone
const PREVIEW_KEY = "wan_animate_previews";
const WIDGET_NAME = "wan_animate_previews";
const DEFAULT_FPS = 8;
const STYLE_ID = "wan-animate-preview-style";
const CORE_PREVIEW_WIDGET = "$$canvas-image-preview"; // the frontend's own image grid (CANVAS_IMAGE_PREVIEW_WIDGET)
const GROUP_HEIGHT = 170;

const STYLE = `
.wan-animate-previews { display: flex; flex-direction: column; gap: 6px; width: 100%; height: 100%;
  overflow: auto; box-sizing: border-box; padding: 2px; font: 11px sans-serif; color: var(--input-text, #ddd); }
.wan-animate-previews .wa-group { display: flex; flex-direction: column; gap: 2px; min-height: 0; }
.wan-animate-previews .wa-head { display: flex; align-items: center; gap: 6px; }
.wan-animate-previews .wa-title { flex: 1; font-weight: bold; text-transform: capitalize; }
.wan-animate-previews .wa-frame { height: ${GROUP_HEIGHT - 50}px; display: flex; justify-content: center;
  background: #111; border-radius: 4px; }
.wan-animate-previews img { max-width: 100%; height: 100%; object-fit: contain; }
.wan-animate-previews input[type=range] { width: 100%; margin: 0; }
.wan-animate-previews button { font: inherit; padding: 0 6px; cursor: pointer; }
.wan-animate-previews .wa-error { color: #f88; }
`;

function ensureStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = STYLE;
  document.head.appendChild(style);
}

function viewUrl(ref) {
  const params = new URLSearchParams({
    filename: ref.filename,
    subfolder: ref.subfolder ?? "",
    type: ref.type ?? "temp",
  });
  return api.apiURL(`/view?${params}`);
}

/** Split the flat image list into the groups declared under `wan_animate_previews`; throws on a mismatch.
 *  A group's images start at its `start` index when given, else right after the previous group's. */
export function groupPreviews(images, groups) {
  let next = 0;
  return groups.map((group) => {
    const count = Number(group.count ?? 0);
    const start = Number.isInteger(group.start) ? group.start : next;
    if (start < 0 || start + count > images.length) {
      throw new Error(
        `${PREVIEW_KEY} group "${group.kind}" wants images ${start}..${start + count - 1} but the node sent ${images.length}`,
      );
    }
    next = start + count;
    const frames = images.slice(start, next);
    return { kind: String(group.kind ?? "preview"), label: group.label, fps: group.fps ?? DEFAULT_FPS, frames };
  });
}

/** One group: title, current frame, a frame slider and play/pause. */
function buildGroup(group) {
  const root = document.createElement("div");
  root.className = "wa-group";
  root.dataset.kind = group.kind;
  root.dataset.count = String(group.frames.length);

  const head = document.createElement("div");
  head.className = "wa-head";
  const title = document.createElement("span");
  title.className = "wa-title";
  const counter = document.createElement("span");
  const play = document.createElement("button");
  play.textContent = "\u25B6";
  play.title = "play / pause";
  head.append(title, counter, play);

  const frameBox = document.createElement("div");
  frameBox.className = "wa-frame";
  const image = document.createElement("img");
  image.alt = `${group.kind} preview`;
  frameBox.appendChild(image);

  const slider = document.createElement("input");
  slider.type = "range";
  slider.min = "0";
  slider.max = String(Math.max(0, group.frames.length - 1));
  slider.value = "0";

  const urls = group.frames.map(viewUrl);
  let timer = null;
  const show = (index) => {
    slider.value = String(index);
    root.dataset.frame = String(index);
    image.src = urls[index];
    counter.textContent = `${index + 1} / ${urls.length}`;
  };
  const stop = () => {
    if (timer !== null) clearInterval(timer);
    timer = null;
    play.textContent = "\u25B6";
  };
  play.onclick = () => {
    if (timer !== null) return stop();
    play.textContent = "\u23F8";
    timer = setInterval(() => show((Number(slider.value) + 1) % urls.length), 1000 / group.fps);
  };
  slider.oninput = () => {
    stop();
    show(Number(slider.value));
  };
  title.textContent = group.label ?? group.kind;
  root.append(head, frameBox, slider);
  if (urls.length) show(0);
  root.stopPlayback = stop;
  return root;
}

function previewWidget(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (widget) return widget;
  const element = document.createElement("div");
  element.className = "wan-animate-previews";
  widget = node.addDOMWidget(WIDGET_NAME, "wan_animate_previews", element, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => GROUP_HEIGHT * Math.max(1, element.childElementCount),
  });
  widget.serialize = false;
  return widget;
}

/** Replace the node's preview groups with those of one `executed` message. */
export function showPreviews(node, output) {
  ensureStyle();
  const widget = previewWidget(node);
  const element = widget.element;
  element.querySelectorAll(".wa-group").forEach((group) => group.stopPlayback?.());
  element.replaceChildren();
  let groups;
  try {
    groups = groupPreviews(output.images ?? [], output[PREVIEW_KEY]);
  } catch (error) {
    const message = document.createElement("div");
    message.className = "wa-error";
    message.textContent = error.message;
    element.appendChild(message);
    console.warn(`[${EXTENSION_NAME}] ${node.comfyClass ?? node.type} #${node.id}: ${error.message}`);
    return;
  }
  element.dataset.kinds = groups.map((group) => group.kind).join(",");
  for (const group of groups) element.appendChild(buildGroup(group));
  hideCorePreview(node);
  node.setSize([Math.max(node.size[0], 320), Math.max(node.size[1], node.computeSize()[1])]);
  node.setDirtyCanvas?.(true, true);
}

/** Our groups replace the frontend's grid of the same images: drop its preview widget and loaded images. */
function hideCorePreview(node) {
  const index = node.widgets?.findIndex((w) => w.name === CORE_PREVIEW_WIDGET) ?? -1;
  if (index > -1) {
    node.widgets[index].onRemove?.();
    node.widgets.splice(index, 1);
  }
  node.imgs = [];
}

function hasPreviews(node) {
  return Boolean(node.widgets?.find((w) => w.name === WIDGET_NAME)?.element?.querySelector(".wa-group"));
}

/** A node definition of a custom node pack (not ComfyUI core) whose class name starts with "WanAnimate". */
function isPackNode(nodeData) {
  return Boolean(nodeData?.name?.startsWith(NODE_PREFIX) && nodeData.python_module?.startsWith(CUSTOM_NODE_MODULE));
}

app.registerExtension({
  name: EXTENSION_NAME,
  nodeCreated(node) {
    if (!isPackNode(node.constructor?.nodeData)) return;
    // The frontend refreshes its own preview while drawing the node background; undo it after each refresh.
    const onDrawBackground = node.onDrawBackground;
    node.onDrawBackground = function () {
      const result = onDrawBackground?.apply(this, arguments);
      if (hasPreviews(this) && (this.imgs?.length || this.widgets?.some((w) => w.name === CORE_PREVIEW_WIDGET))) {
        hideCorePreview(this);
      }
      return result;
    };
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isPackNode(nodeData)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      if (output && Array.isArray(output[PREVIEW_KEY])) showPreviews(this, output);
      return result;
    };
  },
});
