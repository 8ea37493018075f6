// The Hark web console: a file upload to the batch API and a live session from the microphone.
// Plain DOM code, no framework; every text from the server is set with textContent (never as HTML).

import { Downsampler, Framer, TARGET_RATE, clock } from "./pcm.js";

const KEY_STORAGE = "hark.console.apiKey";
const FALLBACK_LANGUAGES = ["en", "multi", "de", "fr", "es", "it", "pt", "nl", "hi", "ja", "zh"];
const LANGUAGE_NAMES = {
  en: "English", de: "German", fr: "French", es: "Spanish", it: "Italian", pt: "Portuguese", nl: "Dutch",
  hi: "Hindi", ja: "Japanese", zh: "Chinese", ru: "Russian", ar: "Arabic", ko: "Korean", pl: "Polish",
  tr: "Turkish", sv: "Swedish", uk: "Ukrainian", multi: "detect (multi)",
};
const MAX_EVENTS = 200;

const $ = (id) => document.getElementById(id);

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function setStatus(text, state = "idle") {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = state;
}

async function readBody(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function describe(status, body) {
  const message = body && typeof body === "object" ? body.error || JSON.stringify(body) : String(body).slice(0, 300);
  return `HTTP ${status}: ${message}`;
}

function addEvent(text, kind = "") {
  const events = $("events");
  const item = document.createElement("li");
  item.textContent = text;
  if (kind) item.className = kind;
  events.append(item);
  while (events.children.length > MAX_EVENTS) events.firstElementChild.remove();
  events.scrollTop = events.scrollHeight;
}

// --- languages ------------------------------------------------------------------------------------

// Fills the language selector from GET /ready (which lists the served languages to a valid key, or to
// anyone when keys are not required), else with a fixed list. Returns what /ready said.
async function loadLanguages() {
  let served = null;
  let multilingual = false;
  let readiness = "unknown";
  try {
    const response = await fetch("/ready", { headers: authHeaders() });
    const body = await response.json();
    readiness = response.ok ? "ready" : `HTTP ${response.status}: ${body.error || "not ready"}`;
    if (Array.isArray(body.languages) && body.languages.length) {
      served = body.languages;
      multilingual = (body.checkpoints || []).some((checkpoint) => checkpoint.multilingual);
    }
  } catch (error) {
    readiness = `unreachable (${error.message})`;
  }
  const codes = served ? [...served, ...(multilingual ? ["multi"] : [])] : FALLBACK_LANGUAGES;
  const select = $("language");
  const previous = select.value || "en";
  select.replaceChildren(...codes.map((code) => {
    const option = document.createElement("option");
    option.value = code;
    option.textContent = LANGUAGE_NAMES[code] ? `${LANGUAGE_NAMES[code]} (${code})` : code;
    return option;
  }));
  select.value = codes.includes(previous) ? previous : codes.includes("en") ? "en" : codes[0];
  return { listed: served !== null, readiness };
}

function showReadiness({ listed, readiness }) {
  if (readiness !== "ready") {
    setStatus(`The server is not ready to transcribe: ${readiness}.`, "error");
  } else if (listed) {
    setStatus("Ready: the languages listed are those this server serves.", "idle");
  } else {
    setStatus("Ready (a fixed list of languages: the server lists its own once a valid key is entered).", "idle");
  }
}

// --- batch ----------------------------------------------------------------------------------------

async function transcribeFile(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) {
    setStatus("Choose an audio file first.", "error");
    return;
  }
  const params = new URLSearchParams({
    model: "pulse",
    language: $("language").value,
    word_timestamps: $("word-timestamps").checked ? "true" : "false",
  });
  $("upload").disabled = true;
  setStatus(`Transcribing ${file.name}…`, "busy");
  try {
    const response = await fetch(`/waves/v1/stt/?${params}`, {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/octet-stream" },
      body: file,
    });
    const body = await readBody(response);
    if (!response.ok) {
      setStatus(`The upload was refused: ${describe(response.status, body)}`, "error");
      return;
    }
    showBatch(body);
    setStatus(`Transcribed ${file.name}.`, "done");
  } catch (error) {
    setStatus(`The upload failed: ${error.message}`, "error");
  } finally {
    $("upload").disabled = false;
  }
}

function showBatch(body) {
  $("batch-result").hidden = false;
  $("batch-text").textContent = body.transcription || "(no speech found)";
  const meta = body.metadata || {};
  const parts = [`language ${body.language || "?"}`];
  if (typeof meta.duration === "number") parts.push(`${meta.duration.toFixed(1)} s of audio`);
  if (typeof meta.processing_time_ms === "number") parts.push(`${Math.round(meta.processing_time_ms)} ms`);
  if (meta.checkpoint) parts.push(meta.checkpoint);
  if (body.request_id) parts.push(body.request_id);
  $("batch-meta").textContent = parts.join(" · ");
  $("batch-words").replaceChildren(...(body.words || []).map((word) => {
    const span = document.createElement("span");
    span.textContent = word.word;
    span.title = `${word.start.toFixed(2)}–${word.end.toFixed(2)} s · confidence ${word.confidence.toFixed(2)}`;
    return span;
  }));
  $("batch-json").textContent = JSON.stringify(body, null, 2);
}

// --- live -----------------------------------------------------------------------------------------

class LiveSession {
  constructor() {
    this.ws = null;
    this.context = null;
    this.stream = null;
    this.node = null;
    this.capturing = false;
    this.opened = false;
    this.stopping = false;
    this.cancelled = false;
    this.lastFinal = false;
    this.error = null;
    this.partials = 0;
    this.finals = 0;
    this.sentBytes = 0;
  }

  async start() {
    setButtons(true);
    $("finals").replaceChildren();
    $("partial").textContent = "";
    $("events").replaceChildren();
    this.updateStats();
    // Made inside the click (a user gesture), so autoplay rules let it run.
    this.context = new AudioContext();
    setStatus("Asking for the microphone…", "connecting");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      this.release();
      setButtons(false);
      setStatus(`No microphone: ${error.message}`, "error");
      session = null;
      return;
    }
    if (this.stopping) {
      this.release();
      setButtons(false);
      setStatus("Cancelled.", "idle");
      session = null;
      return;
    }
    const params = new URLSearchParams({
      model: "pulse",
      language: $("language").value,
      sample_rate: String(TARGET_RATE),
      encoding: "linear16",
      vad_events: $("vad-events").checked ? "true" : "false",
    });
    this.url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/waves/v1/stt/live?${params}`;
    const key = apiKey();
    setStatus("Connecting…", "connecting");
    this.ws = key ? new WebSocket(this.url, ["bearer", key]) : new WebSocket(this.url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => this.onOpen();
    this.ws.onmessage = (event) => this.onMessage(event);
    this.ws.onclose = (event) => this.onClose(event);
  }

  async onOpen() {
    this.opened = true;
    if (this.stopping) return; // Stop was pressed while connecting: close() is on its way
    try {
      await this.startCapture();
      setStatus("Listening: speak, then press Stop.", "live");
    } catch (error) {
      this.error = `audio capture failed: ${error.message}`;
      setStatus(`Audio capture failed: ${error.message}`, "error");
      this.stop();
    }
  }

  async startCapture() {
    const context = this.context;
    const source = context.createMediaStreamSource(this.stream);
    this.downsampler = new Downsampler(context.sampleRate, TARGET_RATE);
    this.framer = new Framer();
    let node;
    if (context.audioWorklet && typeof AudioWorkletNode === "function") {
      await context.audioWorklet.addModule("/console/static/capture-worklet.js");
      node = new AudioWorkletNode(context, "hark-capture", { channelCount: 1, channelCountMode: "explicit" });
      node.port.onmessage = (event) => this.onSamples(event.data);
    } else {
      node = context.createScriptProcessor(4096, 1, 1); // older browsers: the deprecated main-thread path
      node.onaudioprocess = (event) => this.onSamples(event.inputBuffer.getChannelData(0).slice());
    }
    const mute = context.createGain(); // the graph must reach the output to be pulled; silently
    mute.gain.value = 0;
    source.connect(node);
    node.connect(mute);
    mute.connect(context.destination);
    this.node = node;
    this.capturing = true;
    if (context.state === "suspended") await context.resume();
  }

  onSamples(samples) {
    if (!this.capturing) return;
    for (const frame of this.framer.push(this.downsampler.push(samples))) this.send(frame);
  }

  send(data) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(data);
      this.sentBytes += data.byteLength;
      if (this.sentBytes % 32000 < data.byteLength) this.updateStats();
    }
  }

  release() {
    this.capturing = false;
    if (this.node) {
      if (this.node.port) this.node.port.onmessage = null;
      this.node.disconnect();
      this.node = null;
    }
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    this.stream = null;
    const context = this.context;
    this.context = null;
    if (context && context.state !== "closed") context.close().catch(() => {});
  }

  stop() {
    this.stopping = true;
    $("mic-stop").disabled = true;
    if (this.capturing && this.framer) {
      this.capturing = false;
      const rest = this.framer.flush();
      if (rest) this.send(rest);
    }
    this.release();
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "close_stream" }));
      setStatus("Finishing: waiting for the last final…", "closing");
    } else if (this.ws && this.ws.readyState === WebSocket.CONNECTING) {
      this.cancelled = true;
      this.ws.close();
    }
  }

  onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    switch (message.type) {
      case "transcription":
        if (message.is_final) this.addFinal(message);
        else this.showPartial(message.transcript || "");
        break;
      case "speech_started":
      case "speech_ended":
        addEvent(`${message.type.replace("_", " ")} at ${clock(message.timestamp)}`);
        break;
      case "error":
        this.error = `${message.status}: ${message.message}`;
        addEvent(`error ${this.error}`, "error");
        setStatus(`Error from the server: ${this.error}`, "error");
        break;
      default:
        break;
    }
  }

  showPartial(text) {
    $("partial").textContent = text;
    if (text) {
      this.partials += 1;
      $("live").dataset.partials = String(this.partials);
    }
    this.updateStats();
  }

  addFinal(message) {
    $("partial").textContent = "";
    if (message.is_last) this.lastFinal = true;
    const text = (message.transcript || "").trim();
    if (!text) return;
    const item = document.createElement("li");
    item.className = "final";
    if (typeof message.start === "number" && typeof message.end === "number") {
      const time = document.createElement("span");
      time.className = "time";
      time.textContent = `${clock(message.start)} → ${clock(message.end)}`;
      item.append(time);
    }
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(body);
    $("finals").append(item);
    this.finals += 1;
    $("live").dataset.finals = String(this.finals);
    this.updateStats();
  }

  updateStats() {
    const seconds = this.sentBytes / (TARGET_RATE * 2);
    $("live-stats").textContent = `${this.partials} partial(s) · ${this.finals} final(s) · ${seconds.toFixed(1)} s sent`;
  }

  async onClose(event) {
    this.release();
    setButtons(false);
    this.updateStats();
    $("live").dataset.closeCode = String(event.code);
    $("live").dataset.lastFinal = String(this.lastFinal);
    if (this.cancelled) {
      setStatus("Cancelled.", "idle");
    } else if (!this.opened) {
      setStatus(await this.refusal(), "error");
    } else if (this.error) {
      setStatus(`The session ended with an error: ${this.error} (close ${event.code}).`, "error");
    } else if (event.code === 1000 && this.lastFinal) {
      setStatus(`Session ended cleanly (close 1000, ${this.finals} final(s)).`, "ended");
    } else {
      setStatus(`The connection closed with code ${event.code}${event.reason ? `: ${event.reason}` : ""}.`, "error");
    }
    session = null;
  }

  // Browsers hide the HTTP answer of a refused upgrade: ask the same URL over plain HTTP to learn whether
  // the key was the reason (authentication is checked before anything else).
  async refusal() {
    try {
      const response = await fetch(this.url.replace(/^ws/, "http"), { headers: authHeaders() });
      if (response.status === 401) {
        const body = await readBody(response);
        return `The server refused the session: ${describe(401, body)}. Enter a valid API key above.`;
      }
    } catch {
      return "The server cannot be reached.";
    }
    return "The server refused the live session (no free worker slot, or the language is not served); try again.";
  }
}

let session = null;

function setButtons(live) {
  $("mic-start").disabled = live;
  $("mic-stop").disabled = !live;
}

// --- start-up -------------------------------------------------------------------------------------

async function init() {
  const keyInput = $("api-key");
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, keyInput.value.trim()));
  keyInput.addEventListener("change", async () => {
    const readiness = await loadLanguages();
    if (!session) showReadiness(readiness); // a running session keeps its own status
  });
  $("settings-form").addEventListener("submit", (event) => event.preventDefault());
  $("upload-form").addEventListener("submit", transcribeFile);
  $("mic-start").addEventListener("click", () => {
    if (session) return;
    session = new LiveSession();
    session.start();
  });
  $("mic-stop").addEventListener("click", () => session && session.stop());
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    $("mic-start").disabled = true;
    addEvent("This page cannot use the microphone here: browsers allow it only over https:// or on localhost.");
  }
  showReadiness(await loadLanguages());
}

init();
