// The search page: one websocket to /ws speaking the gateway's JSON frames. The token travels
// as the "bearer.<token>" subprotocol (browsers cannot set headers on a WebSocket) and as an
// Authorization header on fetches; it can be preset with #token=...&collection=... (a URL
// fragment never reaches the server or its logs).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { ws: null, token: "", collection: "", pending: new Map(), next: 1,
                image: null, sub: null, n: 12, thumbs: [] };

function setStatus(text, phase) {
  $("status").textContent = text;
  if (phase) document.body.dataset.state = phase;
}

function connect() {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws`, ["streamer.v1", `bearer.${state.token}`]);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("websocket refused (wrong token?)"));
    ws.onclose = (ev) => {
      if (state.ws === ws) {
        state.ws = null;
        state.sub = null;
        setStatus(`Disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""}).`, "closed");
        $("search").disabled = true;
      }
      for (const p of state.pending.values()) p.reject(new Error("connection closed"));
      state.pending.clear();
    };
    ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  });
}

function onFrame(frame) {
  if (frame.event === "match") {
    if (state.sub && frame.subscription === state.sub) addLive(frame);
    return;
  }
  const p = state.pending.get(frame.correlation_id);
  if (!p) return;
  state.pending.delete(frame.correlation_id);
  if (frame.ok) p.resolve(frame.result);
  else p.reject(new Error(`${frame.error.name}: ${frame.error.message}`));
}

function request(payload) {
  const id = `p${state.next++}`;
  return new Promise((resolve, reject) => {
    state.pending.set(id, { resolve, reject });
    state.ws.send(JSON.stringify({ v: 1, correlation_id: id, ...payload }));
  });
}

function b64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function imageArray(file) {
  // Pixels as the wire's array object: uint8 [h, w, 3], scaled to at most 512 px a side.
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, 512 / Math.max(bitmap.width, bitmap.height));
  const w = Math.max(1, Math.round(bitmap.width * scale));
  const h = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const rgb = new Uint8Array(w * h * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return { dtype: "uint8", shape: [h, w, 3], b64: b64(rgb) };
}

async function thumbnail(id, holder) {
  const params = new URLSearchParams({ collection: state.collection, id, size: "200" });
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

async function search(ev) {
  ev.preventDefault();
  const text = $("query").value.trim();
  if (!text && !state.image) return;
  state.n = Math.max(1, Math.min(100, Number($("n").value) || 12));
  const input = state.image ? { images: [state.image] } : { texts: [text] };
  const target = { name: state.collection };
  setStatus("Searching…", "searching");
  try {
    if (state.sub) {
      const old = state.sub;
      state.sub = null;
      await request({ op: "unsubscribe", subscription: old });
    }
    let result;
    if ($("live").checked) {
      const sub = await request({ op: "subscribe", ...target, ...input, top_k: state.n });
      state.sub = sub.subscription;
      result = sub.initial;
    } else {
      result = await request({ op: "query", ...target, ...input, n_results: state.n,
                               include: ["documents", "distances", "uris"] });
    }
    const n = render(result);
    setStatus(`${n} results${state.sub ? ", live: new matches appear as they are ingested" : ""}.`,
              state.sub ? "live" : "done");
  } catch (err) {
    setStatus(String(err.message || err), "error");
  }
}

async function loadCollections() {
  const res = await fetch("/api/collections", { headers: { Authorization: `Bearer ${state.token}` } });
  if (!res.ok) throw new Error(res.status === 401 ? "That token was refused." : `HTTP ${res.status}`);
  const select = $("collection");
  const wanted = state.collection || select.value;
  select.replaceChildren(...(await res.json()).map((c) => new Option(c.name, c.name)));
  if (wanted) select.value = wanted;
}

async function start(ev) {
  if (ev) ev.preventDefault();
  state.token = $("token").value.trim();
  if (!state.token) return;
  try {
    await loadCollections();
    state.collection = $("collection").value;
    if (!state.collection) throw new Error("This token can read no collection.");
    if (state.ws) state.ws.close(1000, "reconnecting");
    state.ws = await connect();
    $("search").disabled = false;
    setStatus(`Connected to ${state.collection}.`, "connected");
  } catch (err) {
    setStatus(String(err.message || err), "error");
  }
}

async function useImage(file) {
  if (!file || !file.type.startsWith("image/")) return;
  state.image = await imageArray(file);
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
  if (preset.get("collection")) state.collection = preset.get("collection");
  $("connect-form").addEventListener("submit", start);
  $("collection").addEventListener("change", () => { state.collection = $("collection").value; });
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
