// Jarvis web client: one WebSocket (/ws) speaking the protocol in shared/protocol.py.
// Text frames are JSON events; binary frames are a 1-byte tag + payload (0x01 PCM16 audio,
// 0x02 JPEG/PNG image). No build step, no dependencies.

import { Mic, Player, TAG_AUDIO, TAG_IMAGE } from "./audio.js";

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $("conn"), state: $("state"), settings: $("settings"), url: $("url"), token: $("token"),
  pipeline: $("pipeline"), mode: $("mode"), connect: $("connect"), newSession: $("new-session"),
  errors: $("errors"), loading: $("loading"), models: $("models"), eta: $("eta"), log: $("log"), hint: $("hint"),
  talk: $("talk"), level: $("level"), speaking: $("speaking"), stop: $("stop"),
  chat: $("chat"), text: $("text"), speak: $("speak"), send: $("send"),
  camera: $("camera"), upload: $("upload"), video: $("video"), thumb: $("thumb"),
};

// ---- persisted settings and the session cursor ---------------------------------------

const store = {
  get: (k, d = null) => {
    try { return localStorage.getItem(`jarvis.${k}`) ?? d; } catch { return d; }
  },
  set: (k, v) => {
    try { v == null || v === "" ? localStorage.removeItem(`jarvis.${k}`) : localStorage.setItem(`jarvis.${k}`, v); } catch { /* private mode */ }
  },
};

const defaultUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host || "127.0.0.1:8765"}/ws`;
ui.url.value = store.get("url", defaultUrl);
ui.token.value = store.get("token", "");
ui.pipeline.value = store.get("pipeline", "sts");
ui.mode.value = store.get("mode", "vad");

// ---- state ----------------------------------------------------------------------------

const app = {
  ws: null,
  wanted: false, // the user asked to be connected (reconnect on drops)
  ready: false,
  retries: 0,
  state: "IDLE",
  sessionId: store.get("session_id"),
  resumeSecret: store.get("resume_secret"), // what resuming the session takes (from `ready`)
  lastEventId: store.get("last_event_id"),
  mic: null,
  player: null,
  camera: null,
  cameraTimer: null,
  image: null, // the last image sent {bytes, mime}: re-sent after a reconnect
  turns: new Map(),
  ptt: false,
  sent: { frames: 0, images: 0, texts: 0 },
};

const loadingModels = new Map(); // model -> its latest {model, state, progress}; events may name only some

// A read-only view for tests and debugging in the console.
window.jarvis = {
  events: [],
  counts: {},
  interrupts: [], // what the player held when each `interrupted` arrived, and right after the flush
  get state() { return app.state; },
  get ready() { return app.ready; },
  get sessionId() { return app.sessionId; },
  get lastEventId() { return app.lastEventId; },
  get micFrames() { return app.mic ? app.mic.frames : 0; },
  get sent() { return { ...app.sent }; },
  get player() {
    const p = app.player;
    return p && { ...p.stats, queued: p.queued, playing: p.playing, sources: p.sources.size, accepting: p.accepting, context: p.ctx.state };
  },
};

// ---- connection ---------------------------------------------------------------------

function wsUrl() {
  const url = new URL(ui.url.value.trim() || defaultUrl, location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  const token = ui.token.value.trim();
  if (token) url.searchParams.set("token", token);
  return url;
}

async function connect() {
  clearErrors();
  app.wanted = true;
  app.connectedOnce = false; // reconnect on drops only after this connect got a session
  store.set("url", ui.url.value.trim());
  store.set("token", ui.token.value.trim());
  store.set("connected", "1");
  if (!app.player) {
    app.player = new Player();
    app.player.onchange = renderPlayer;
  }
  await app.player.resume();
  if (!app.mic) {
    const mic = new Mic(onMicFrame);
    try {
      await mic.start();
      app.mic = mic;
    } catch (err) {
      mic.stop();
      showError(`Microphone unavailable (${err.name || "error"}: ${err.message}). You can still type.`);
    }
  }
  open();
}

function open() {
  let url;
  try {
    url = wsUrl();
  } catch {
    showError(`Not a valid server address: ${ui.url.value}`);
    return;
  }
  setConn("connecting…");
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  app.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    app.resendImage = true;
    setConn("connected", "on");
    sendStart();
  };
  ws.onmessage = (e) => (typeof e.data === "string" ? onEvent(JSON.parse(e.data)) : onBinary(e.data));
  ws.onclose = (e) => {
    if (app.ws !== ws) return;
    app.ws = null;
    setReady(false);
    setConn("offline");
    if (!opened) showError(`Could not connect to ${ui.url.value}${ui.token.value ? " (is the token right?)" : " (does it need a token?)"}.`);
    else if (e.code === 4001) showError("This session was opened in another window.");
    else if (e.code >= 4000 && e.reason) showError(`Disconnected: ${e.reason}`);
    if (e.code === 4001 || !app.connectedOnce) {
      // a first connection that fails is the user's to retry (wrong address or token)
      app.wanted = false;
      store.set("connected", null);
      app.mic?.stop();
      app.mic = null;
      setReady(false);
    } else if (app.wanted) {
      const delay = Math.min(10000, 500 * 2 ** app.retries++);
      setConn(`reconnecting in ${Math.round(delay / 1000)} s…`);
      setTimeout(() => app.wanted && !app.ws && open(), delay);
    }
  };
}

function disconnect() {
  app.wanted = false;
  store.set("connected", null);
  if (app.ws?.readyState === WebSocket.OPEN) send({ type: "stop" }); // ends the session's turn; history is kept
  app.ws?.close(1000);
  app.ws = null;
  app.player?.flush();
  app.mic?.stop();
  app.mic = null;
  setReady(false);
  setConn("offline");
  setState("IDLE");
}

function send(obj) {
  if (app.ws?.readyState !== WebSocket.OPEN) return false;
  app.ws.send(JSON.stringify(obj));
  return true;
}

function sendBinary(tag, bytes) {
  if (app.ws?.readyState !== WebSocket.OPEN || !app.ready) return false;
  const frame = new Uint8Array(bytes.byteLength + 1);
  frame[0] = tag;
  frame.set(new Uint8Array(bytes), 1);
  app.ws.send(frame);
  return true;
}

function onMicFrame(frame, level) {
  ui.level.value = Math.min(1, level * 4);
  const ws = app.ws;
  // frames are already tagged (0x01); drop them if the socket backs up rather than lag behind
  if (ws?.readyState === WebSocket.OPEN && app.ready && ws.bufferedAmount < 256 * 1024) {
    ws.send(frame);
    app.sent.frames++;
  }
}

// ---- server events ------------------------------------------------------------------

function onBinary(buf) {
  const tag = new Uint8Array(buf, 0, 1)[0];
  if (tag === TAG_AUDIO && app.player) app.player.push(new DataView(buf, 1));
}

function onEvent(ev) {
  const log = window.jarvis;
  log.events.push({ type: ev.type, turn: ev.turn, t: Math.round(performance.now()) });
  if (log.events.length > 1000) log.events.splice(0, 500);
  log.counts[ev.type] = (log.counts[ev.type] || 0) + 1;
  if (ev.id) {
    app.lastEventId = ev.id;
    store.set("last_event_id", ev.id);
  }
  switch (ev.type) {
    case "ready":
      app.sessionId = ev.session_id;
      store.set("session_id", ev.session_id);
      if (ev.resume_secret) {
        app.resumeSecret = ev.resume_secret;
        store.set("resume_secret", ev.resume_secret);
      }
      app.retries = 0;
      app.connectedOnce = true;
      if (ui.pipeline.value !== ev.pipeline) {
        ui.pipeline.value = ev.pipeline;
        pipelineDefaults();
      }
      if (ev.trigger === "vad" || ev.trigger === "manual") ui.mode.value = ev.trigger;
      setReady(true);
      if (ev.resumed && ev.turns && !app.turns.size) note(`Resumed a conversation with ${ev.turns} earlier turn${ev.turns > 1 ? "s" : ""}.`);
      if (app.resendImage && app.image) sendBinary(TAG_IMAGE, app.image.bytes); // the new connection's server may not have it
      app.resendImage = false;
      break;
    case "state":
      setState(ev.state);
      break;
    case "vad":
      ui.speaking.hidden = !ev.speaking;
      if (ev.speaking) snapshotForQuestion();
      break;
    case "transcript":
      if (ev.final && !ev.text) dropTurn(ev.turn); // nothing intelligible: not a turn (its number is reused)
      else turnView(ev.turn).user(ev.text, ev.final);
      break;
    case "reply":
      if (ev.final) turnView(ev.turn).bot(ev.text ?? "", true);
      else turnView(ev.turn).bot(ev.delta, false);
      break;
    case "audio_start":
      app.player?.begin(ev.turn, ev.sample_rate);
      break;
    case "audio_end":
      break;
    case "playback":
      if (ev.action === "pause") app.player?.pause();
      else app.player?.resume();
      break;
    case "interrupted": {
      const p = app.player;
      const before = p ? { queued: p.queued, played: p.stats.played } : { queued: 0, played: 0 };
      p?.flush(); // stop at once: nothing queued may keep playing
      log.interrupts.push({
        turn: ev.turn, queuedBefore: before.queued, playedBefore: before.played,
        queuedAfter: p ? p.queued : 0, sourcesAfter: p ? p.sources.size : 0, accepting: p ? p.accepting : false,
      });
      if (ev.continued) turnView(ev.turn).continued(); // the user went on: one bubble, answered again
      else turnView(ev.turn).interrupted(ev.spoken || "");
      break;
    }
    case "loading":
      renderLoading(ev);
      break;
    case "metrics":
      turnView(ev.turn).metrics(ev);
      break;
    case "error":
      showError(`${ev.message} (${ev.code})`);
      if (ev.fatal) forgetSession();
      else if (!app.ready && (ev.code === "bad_session_id" || ev.code === "unauthorized")) {
        // the saved session can't be resumed (expired, or its secret is gone): start a new one
        forgetSession();
        sendStart();
      }
      break;
  }
}

// ---- the conversation view ----------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

function stickToBottom(fn) {
  const atEnd = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  fn();
  if (atEnd) ui.log.scrollTop = ui.log.scrollHeight;
}

function note(text) {
  ui.hint.hidden = true;
  stickToBottom(() => ui.log.append(el("p", "note", text)));
}

function dropTurn(n) {
  app.turns.get(n)?.article.remove();
  app.turns.delete(n);
}

function turnView(n) {
  let v = app.turns.get(n);
  if (v) return v;
  ui.hint.hidden = true;
  const article = el("article", "turn");
  article.dataset.turn = n;
  const user = el("div", "msg user");
  const userText = el("p", "text");
  user.append(el("span", "who", "You"), userText);
  const bot = el("div", "msg bot");
  const botText = el("p", "text");
  bot.append(el("span", "who", "Jarvis"), botText);
  bot.hidden = true;
  const metrics = el("p", "metrics");
  metrics.hidden = true;
  article.append(user, bot, metrics);
  stickToBottom(() => ui.log.append(article));
  let reply = "";
  v = {
    article,
    user(text, final) {
      stickToBottom(() => {
        userText.textContent = text || "…";
        userText.classList.toggle("partial", !final);
      });
    },
    bot(text, final) {
      reply = final ? text : reply + text;
      stickToBottom(() => {
        bot.hidden = false;
        botText.textContent = reply;
        botText.classList.toggle("streaming", !final);
      });
    },
    continued() {
      reply = "";
      botText.textContent = "";
      bot.hidden = true;
      metrics.hidden = true;
      userText.classList.add("partial"); // its words so far; the next transcript has them all
    },
    interrupted(spoken) {
      bot.hidden = false;
      bot.classList.add("interrupted");
      botText.classList.remove("streaming");
      botText.textContent = "";
      const rest = reply.startsWith(spoken) ? reply.slice(spoken.length) : reply;
      botText.append(el("span", "heard", spoken), el("span", "unheard", rest));
      if (!bot.querySelector(".tag")) bot.append(el("span", "tag", "interrupted"));
      if (!metrics.hidden && !metrics.textContent.endsWith("interrupted")) metrics.textContent += "  |  interrupted";
    },
    metrics(m) {
      const ms = (x) => (x == null ? null : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${Math.round(x)} ms`);
      const parts = [
        ["end of turn", m.end_of_turn_ms], ["transcript", m.transcript_ms], ["first token", m.first_token_ms],
        ["first audio", m.first_audio_ms], ["total", m.total_ms],
      ].filter(([, x]) => x != null).map(([k, x]) => `${k} ${ms(x)}`);
      const stages = [["STT", m.stt_ms], ["LLM", m.llm_ms], ["TTS", m.tts_ms]]
        .filter(([, x]) => x != null).map(([k, x]) => `${k} ${ms(x)}`);
      metrics.textContent = parts.join(" · ") + (stages.length ? `  |  ${stages.join(" · ")}` : "") + (m.interrupted ? "  |  interrupted" : "");
      metrics.title = "Milliseconds from the end of your speech; then the time each stage spent";
      metrics.hidden = false;
    },
  };
  app.turns.set(n, v);
  return v;
}

function setState(state) {
  app.state = state;
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  ui.stop.disabled = !app.ready || !(state === "THINKING" || state === "SPEAKING");
  if (state !== "LOADING") {
    ui.loading.hidden = true;
    loadingModels.clear();
  }
}

function setConn(text, cls = "") {
  ui.conn.textContent = text;
  ui.conn.className = `conn ${cls}`;
}

function setReady(ready) {
  app.ready = ready;
  ui.connect.textContent = ready || app.wanted ? "Disconnect" : "Connect";
  ui.connect.classList.toggle("primary", !(ready || app.wanted));
  ui.text.disabled = ui.send.disabled = !ready;
  ui.talk.disabled = !ready || ui.mode.value !== "manual";
  ui.talk.hidden = ui.mode.value !== "manual";
  setState(app.state);
}

/** Replies are spoken except in the chat pipeline, unless the user ticks "speak". */
function pipelineDefaults() {
  ui.speak.checked = ui.pipeline.value !== "chat";
}

function renderLoading(ev) {
  ui.loading.hidden = false;
  ui.eta.textContent = ev.eta_s != null ? ` (about ${Math.ceil(ev.eta_s)} s)` : "";
  for (const m of ev.models) loadingModels.set(m.model, m);
  ui.models.replaceChildren(
    ...[...loadingModels.values()].map((m) => {
      const li = el("li");
      const bar = el("progress");
      bar.max = 1;
      bar.value = m.progress || 0;
      bar.setAttribute("aria-label", `${m.model} ${Math.round((m.progress || 0) * 100)}%`);
      li.append(el("span", "model", m.model), bar, el("span", `mstate ${m.state}`, m.state));
      return li;
    }),
  );
  // progress can also come outside LOADING (a model warmed in the background): hide once all are in
  const done = [...loadingModels.values()].every((m) => m.state === "ready");
  if (done && app.state !== "LOADING") {
    ui.loading.hidden = true;
    loadingModels.clear();
  }
}

function renderPlayer() {
  ui.state.classList.toggle("playing", !!app.player?.playing);
}

function showError(text) {
  if (ui.errors.lastElementChild?.firstChild?.textContent === text) return; // no repeats
  const item = el("div", "error");
  item.append(el("span", null, text));
  const close = el("button", "dismiss", "×");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss");
  close.onclick = () => item.remove();
  item.append(close);
  ui.errors.append(item);
  while (ui.errors.children.length > 4) ui.errors.firstChild.remove();
}

function clearErrors() {
  ui.errors.replaceChildren();
}

// ---- push to talk, text, interrupt ------------------------------------------------------

function pttBegin() {
  if (app.ptt || ui.talk.disabled) return;
  app.ptt = true;
  ui.talk.setAttribute("aria-pressed", "true");
  app.player?.flush(); // the user is talking over the reply: silence it now
  snapshotForQuestion();
  send({ type: "turn", action: "begin" });
}

function pttEnd() {
  if (!app.ptt) return;
  app.ptt = false;
  ui.talk.setAttribute("aria-pressed", "false");
  send({ type: "turn", action: "end" });
}

ui.talk.addEventListener("pointerdown", (e) => {
  ui.talk.setPointerCapture(e.pointerId);
  pttBegin();
});
for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) ui.talk.addEventListener(type, pttEnd);
const typing = (t) => t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement || t?.isContentEditable;
document.addEventListener("keydown", (e) => {
  if (e.code !== "Space" || typing(e.target) || ui.talk.disabled) return;
  e.preventDefault();
  if (!e.repeat) pttBegin();
});
document.addEventListener("keyup", (e) => {
  if (e.code === "Space" && app.ptt) {
    e.preventDefault();
    pttEnd();
  }
});
window.addEventListener("blur", pttEnd);

ui.chat.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !app.ready) return;
  snapshotForQuestion();
  if (send({ type: "text", text, speak: ui.speak.checked })) {
    app.sent.texts++;
    ui.text.value = "";
  }
});

ui.stop.addEventListener("click", () => {
  app.player?.flush();
  send({ type: "interrupt" });
});

ui.settings.addEventListener("submit", (e) => {
  e.preventDefault();
  if (app.wanted) disconnect();
  else connect();
});

ui.newSession.addEventListener("click", () => {
  forgetSession();
  app.turns.clear();
  ui.log.replaceChildren(ui.hint);
  ui.hint.hidden = false;
  if (app.ws) {
    send({ type: "stop" });
    app.ws.close(1000);
    app.ws = null;
    setReady(false);
    if (app.wanted) open();
  }
});

function reconfigure(e) {
  if (e?.target === ui.pipeline) pipelineDefaults();
  store.set("pipeline", ui.pipeline.value);
  store.set("mode", ui.mode.value);
  if (app.ready) send({ type: "config", pipeline: ui.pipeline.value, trigger: ui.mode.value });
  setReady(app.ready);
}
ui.pipeline.addEventListener("change", reconfigure);
ui.mode.addEventListener("change", reconfigure);

// ---- images: camera snapshots and uploads -------------------------------------------------

const MAX_IMAGE_BYTES = 1000 * 1024; // the gateway drops frames over 1 MiB

function sendImage(bytes, mime) {
  app.image = { bytes, mime };
  if (sendBinary(TAG_IMAGE, bytes)) app.sent.images++;
}

function showThumb(blob) {
  if (ui.thumb.src) URL.revokeObjectURL(ui.thumb.src);
  ui.thumb.src = URL.createObjectURL(blob);
  ui.thumb.hidden = false;
}

async function encodeJpeg(source, width, height, maxSide) {
  const scale = Math.min(1, maxSide / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
}

async function snapshotForQuestion() {
  if (!app.camera || ui.pipeline.value !== "vision" || !ui.video.videoWidth) return;
  const blob = await encodeJpeg(ui.video, ui.video.videoWidth, ui.video.videoHeight, 640);
  if (blob) sendImage(await blob.arrayBuffer(), "image/jpeg");
}

ui.camera.addEventListener("click", async () => {
  if (app.camera) {
    app.camera.getTracks().forEach((t) => t.stop());
    app.camera = null;
    clearInterval(app.cameraTimer);
    ui.video.hidden = true;
    ui.camera.setAttribute("aria-pressed", "false");
    return;
  }
  try {
    app.camera = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  } catch (err) {
    showError(`Camera unavailable (${err.name || "error"}: ${err.message}).`);
    return;
  }
  ui.video.srcObject = app.camera;
  ui.video.hidden = false;
  ui.thumb.hidden = true;
  await ui.video.play().catch(() => {});
  ui.camera.setAttribute("aria-pressed", "true");
  if (ui.pipeline.value !== "vision") {
    ui.pipeline.value = "vision";
    pipelineDefaults();
    reconfigure();
  }
  // the latest frame is what the model sees: keep it fresh between questions too
  app.cameraTimer = setInterval(snapshotForQuestion, 5000);
  snapshotForQuestion();
});

ui.upload.addEventListener("change", async () => {
  const file = ui.upload.files[0];
  ui.upload.value = "";
  if (!file) return;
  let blob = file;
  if (!(file.type === "image/jpeg" || file.type === "image/png") || file.size > MAX_IMAGE_BYTES) {
    try {
      const bitmap = await createImageBitmap(file);
      blob = await encodeJpeg(bitmap, bitmap.width, bitmap.height, 1280);
    } catch {
      showError(`Could not read ${file.name} as an image.`);
      return;
    }
  }
  showThumb(blob);
  if (ui.pipeline.value !== "vision") {
    ui.pipeline.value = "vision";
    pipelineDefaults();
    reconfigure();
    note("Switched to the vision pipeline: ask about the image.");
  }
  sendImage(await blob.arrayBuffer(), blob.type || "image/jpeg");
});

function sendStart() {
  send({
    type: "start",
    pipeline: ui.pipeline.value,
    trigger: ui.mode.value,
    sample_rate: 16000,
    session_id: app.sessionId || undefined,
    resume_secret: (app.sessionId && app.resumeSecret) || undefined,
    last_event_id: (app.sessionId && app.lastEventId) || undefined,
  });
}

function forgetSession() {
  app.sessionId = app.lastEventId = app.resumeSecret = null;
  store.set("session_id", null);
  store.set("resume_secret", null);
  store.set("last_event_id", null);
}

// ---- start -------------------------------------------------------------------------------

pipelineDefaults();
setReady(false);
if (store.get("connected") === "1") {
  // reconnect after a reload, resuming the session; audio may need a click to start
  connect();
  const unlock = () => app.player?.resume();
  document.addEventListener("pointerdown", unlock, { once: true });
  document.addEventListener("keydown", unlock, { once: true });
}
