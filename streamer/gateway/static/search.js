// The search page, built on the TypeScript client (clients/typescript, served from
// /static/client/). The token travels as the "bearer.<token>" subprotocol (browsers cannot
// set headers on a WebSocket) and as an Authorization header on the thumbnail fetches; it can
// be preset with #token=...&collection=... (a URL fragment never reaches the server or its logs).
import { StreamerClient } from "/static/client/index.js";

const $ = (id) => document.getElementById(id);
const state = { client: null, collection: null, token: "", name: "", image: null, live: null, n: 12, thumbs: [] };

function setStatus(text, phase) {
  $("status").textContent = text;
  if (phase) document.body.dataset.state = phase;
}

async function imageCanvas(file) {
  // At most 512 px a side: the model sees 224 px anyway, and a phone photo stays small on the wire.
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, 512 / Math.max(bitmap.width, bitmap.height));
  const canvas = new OffscreenCanvas(Math.max(1, Math.round(bitmap.width * scale)),
                                     Math.max(1, Math.round(bitmap.height * scale)));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return canvas;
}

async function thumbnail(id, holder) {
  const params = new URLSearchParams({ collection: state.name, id, size: "200" });
  const res = await fetch(`/api/thumbnail?${params}`, { headers: { Authorization: `Bearer ${state.token}` } });
  if (!res.ok) return;
  const url = URL.createObjectURL(await res.blob());
  state.thumbs.push(url);
  const img = document.createElement("img");
  img.alt = id;
  img.src = url;
  holder.replaceChildren(img);
}

function card(hit) {
  const li = document.createElement("li");
  li.className = "result";
  li.dataset.id = hit.id;
  li.dataset.distance = String(hit.distance);
  const holder = document.createElement("div");
  holder.className = "thumb";
  holder.textContent = hit.document || "(no preview)";
  const meta = document.createElement("div");
  meta.className = "meta";
  for (const [cls, text] of [["rank", ""], ["id", hit.id], ["distance", `distance ${hit.distance.toFixed(4)}`],
                             ["doc", hit.document || ""]]) {
    const span = document.createElement("div");
    span.className = cls;
    span.textContent = text;
    meta.append(span);
  }
  li.append(holder, meta);
  if (hit.uri) thumbnail(hit.id, holder).catch(() => {});
  return li;
}

function renumber() {
  const items = [...$("results").children];
  items.forEach((li, i) => { li.querySelector(".rank").textContent = `#${i + 1}`; });
  return items.length;
}

function render(result) {
  for (const url of state.thumbs) URL.revokeObjectURL(url);
  state.thumbs = [];
  const hits = (result.ids[0] || []).map((id, i) => ({
    id, distance: result.distances[0][i],
    document: result.documents ? result.documents[0][i] : null,
    uri: result.uris ? result.uris[0][i] : null }));
  $("results").replaceChildren(...hits.map(card));
  return renumber();
}

function addLive(match) {
  const list = $("results");
  list.querySelector(`.result[data-id="${CSS.escape(match.id)}"]`)?.remove();
  const li = card(match);
  li.classList.add("new");
  const after = [...list.children].find((el) => Number(el.dataset.distance) > match.distance);
  list.insertBefore(li, after || null);
  while (list.children.length > state.n) list.lastElementChild.remove();
  const n = renumber();
  setStatus(`${n} results, live: ${match.id} just arrived.`, "live");
}

async function follow(live) {
  try {
    for await (const match of live) addLive(match);
  } catch (err) {
    if (state.live === live) setStatus(`Live query ended: ${err.message || err}`, "error");
  }
}

async function search(ev) {
  ev.preventDefault();
  const text = $("query").value.trim();
  if (!text && !state.image) return;
  state.n = Math.max(1, Math.min(100, Number($("n").value) || 12));
  const input = state.image ? { queryImages: [state.image] } : { queryTexts: [text] };
  setStatus("Searching…", "searching");
  try {
    if (state.live) {
      const old = state.live;
      state.live = null;
      await old.return();
    }
    let result;
    if ($("live").checked) {
      const live = state.collection.subscribe({ ...input, topK: state.n, include: ["documents", "uris"] });
      await live.ready;
      state.live = live;
      result = live.initial;
      follow(live);
    } else {
      result = await state.collection.query({ ...input, nResults: state.n,
                                              include: ["documents", "distances", "uris"] });
    }
    const n = render(result);
    setStatus(`${n} results${state.live ? ", live: new matches appear as they are ingested" : ""}.`,
              state.live ? "live" : "done");
  } catch (err) {
    setStatus(`${err.name}: ${err.message || err}`, "error");
  }
}

async function start(ev) {
  if (ev) ev.preventDefault();
  state.token = $("token").value.trim();
  if (!state.token) return;
  try {
    state.client?.close();
    state.client = new StreamerClient({ url: location.origin, token: state.token });
    const names = (await state.client.listCollections()).map((c) => c.name);
    const select = $("collection");
    select.replaceChildren(...names.map((n) => new Option(n, n)));
    if (state.name && names.includes(state.name)) select.value = state.name;
    state.name = select.value;
    if (!state.name) throw new Error("This token can read no collection.");
    state.collection = await state.client.getCollection({ name: state.name });
    $("search").disabled = false;
    setStatus(`Connected to ${state.name}.`, "connected");
  } catch (err) {
    setStatus(err.code === "unavailable" ? "That token was refused, or the server is down." : String(err.message || err),
              "error");
  }
}

async function useImage(file) {
  if (!file || !file.type.startsWith("image/")) return;
  state.image = await imageCanvas(file);
  $("image-name").textContent = file.name;
  $("image-name").hidden = $("clear-image").hidden = false;
  $("query").value = "";
  $("query").disabled = true;
}

function clearImage() {
  state.image = null;
  $("image-name").hidden = $("clear-image").hidden = true;
  $("query").disabled = false;
}

function init() {
  const preset = new URLSearchParams(location.hash.slice(1));
  if (preset.get("token")) $("token").value = preset.get("token");
  if (preset.get("collection")) state.name = preset.get("collection");
  $("connect-form").addEventListener("submit", start);
  $("collection").addEventListener("change", async () => {
    state.name = $("collection").value;
    state.collection = await state.client.getCollection({ name: state.name });
  });
  $("search-form").addEventListener("submit", search);
  $("file").addEventListener("change", (e) => useImage(e.target.files[0]));
  $("clear-image").addEventListener("click", clearImage);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    useImage(e.dataTransfer.files[0]);
  });
  if ($("token").value) start();
}

init();
