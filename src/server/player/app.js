// The radio web player: the library, private play that resumes from the
// session, going live as a station, and tuning in to one in sync.
//
// It speaks the radio protocol v1 (docs/protocol.md) over /ws. Three modes:
//   private   - plays the library on its own; the position is saved to
//               /api/session so a reload resumes there.
//   live      - a broadcaster: sends `update` on every change (play, pause,
//               seek, track) and a `heartbeat` every second, both stamped
//               with `at_server_ms` from the clock offset.
//   listening - tuned to a station: follows its `sync` frames, keeping the
//               media element within ~40 ms of the station's position. A
//               track this browser cannot play is reported (`cannot_play`):
//               when every listener fails, the station moves on. A track
//               that failed to load (a 503 at a track change's herd, a
//               dropped connection) is retried first, with jittered backoff,
//               at the station's position: only a file that is gone (404)
//               or does not decode, or a retry budget spent, is reported.
//
// Sync engine: the clock offset to the server comes from ping/pong, keeping
// the samples with the smallest round trip (their offset is the least
// skewed by queueing). The station's position now is
//   position_ms + (server_now - server_time_ms)   while playing,
// never past duration_ms: past its end a station waits for its next state,
// and so does the player (an ended file is never started again).
// Drift under ~300 ms is corrected by nudging playbackRate a few percent
// until within ~40 ms; larger drift by seeking (aimed ahead by the measured
// seek latency).
//
// Even loudness: each track plays at the gain the server measured for it
// (`gain_db`, toward -18 LUFS: the station's `sync`, else the library's
// entry), through a Web Audio GainNode fed by the media element.
// The next track: when a sync announces what plays next (`next`), a second
// media element fetches it ahead of the current track's end, each listener
// at its own moment (a random share of the last half minute), so a
// station's listeners do not all fetch together; at the boundary it starts
// on the current one's audio clock and the two elements swap roles (the
// playing one is always #media). No request at the boundary, no gap.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // The element that plays, and the one that fetches the next track; they
  // swap at a track's boundary (see "the next track, ready").
  let media = $("media");
  let standby = media.cloneNode(false);
  standby.id = "media-next";
  media.after(standby);

  // Tunables.
  const CLOCK_SAMPLES = 8;          // pong samples kept
  const PING_EVERY_MS = 2000;
  const HEARTBEAT_MS = 1000;        // broadcaster heartbeat while live
  const STATIONS_EVERY_MS = 3000;   // list_stations refresh
  const CORRECT_EVERY_MS = 200;     // listener correction loop
  const SEEK_OVER_MS = 300;         // drift beyond this: seek
  const NUDGE_OVER_MS = 40;         // drift beyond this: nudge the rate
  const NUDGE_UNTIL_MS = 15;        // ... until within this
  const MAX_NUDGE = 0.05;           // at most ±5% rate
  const MAX_SEEK_LEAD_MS = 500;     // seeks are aimed at most this far ahead
  const SAVE_EVERY_MS = 5000;       // private position saves
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const MAX_LISTED = 500;           // library rows rendered at once
  const PRELOAD_MIN_MS = 4000;      // the next track is fetched at least this
  const PRELOAD_MAX_MS = 30000;     // ... and at most this long before the end
  const START_LEAD_MS = 20;         // first guess of how long a start takes
  const MAX_START_LEAD_MS = 200;
  const LATE_STATE_MS = 1000;       // a state this near the end of the track
                                    // just left was sent before its end
  const MEDIA_RETRIES = 5;          // reloads of a track that failed to load
  const MEDIA_CHECK_MS = 500;       // first wait before asking why (doubling)
  const MEDIA_RETRY_MS = 1000;      // first wait before a reload (doubling)
  const MEDIA_RETRY_MAX_MS = 16000;
  // A media error that names the demuxer or decoder: the bytes came, and
  // they are not something this browser plays. (Chromium says "Format
  // error" alike for an HTTP error status, a dropped connection and an
  // unknown format, so that code alone does not tell.)
  const DECODER_RE = /DEMUXER_ERROR|DECODER_ERROR|PIPELINE_ERROR_DECODE|PIPELINE_ERROR_COULD_NOT_RENDER|decod|codec/i;
  const STATION_RE = /^[A-Za-z0-9._-]{1,64}$/;

  const st = {
    library: [],
    byId: new Map(),
    mode: "private",         // "private" | "live" | "listening"
    track: null,             // id of the loaded track
    // connection
    ws: null,
    connected: false,
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    pingId: 0,
    samples: [],             // {rtt, offset}
    offset: null,            // server_time - client_time, ms
    rtt: null,
    // live
    station: null,
    resumeToken: null,
    heartbeatTimer: null,
    waiting: false,          // media stalled while playing
    seekUpdate: null,        // pending update after seeks
    // listening
    tuned: null,             // station name
    sync: null,              // newest sync frame
    stationLive: false,
    drift: null,
    nudging: false,
    seekLead: 0,             // learned seek latency, ms
    lastSeekAt: 0,
    lastPlayingAt: 0,
    seekCheck: false,
    leaveFor: null,          // the track to play once the station is left
    failed: null,            // the loaded track, when it cannot play here
    retry: null,             // {track, tries, ...}: the loaded track failed
                             // to load and is being retried
    by: "live",              // who plays the tuned station: "live" or "auto"
    recent: [],              // its last plays, newest first
    // the next track
    ready: null,             // {next, el}: `next` fetched into `standby`
    planned: null,           // what the preload timer was set for
    preloadTimer: null,
    switchTimer: null,
    share: Math.random(),    // this listener's place in the preload spread
    startLead: START_LEAD_MS, // learned: a start is asked this much early
    gaps: [],                // measured at each switch, for the curious
    left: null,              // the track this page left at its end
    // private and live
    intent: false,           // the page means to play (play() vs pause())
    // live
    unplayable: new Set(),   // tracks every listener failed: passed over
    // private
    lastSave: 0,
  };

  // ---------- helpers ----------
  const fmt = (sec) => {
    if (!isFinite(sec) || sec < 0) sec = 0;
    const s = Math.floor(sec % 60), m = Math.floor(sec / 60);
    return `${m}:${s < 10 ? "0" : ""}${s}`;
  };
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  // A track's URL: the library's (which names the file's version, and the
  // server's --media-base-url when it has one), else this server's path.
  const mediaUrl = (id) =>
    st.byId.get(id)?.url ?? "/media/" + id.split("/").map(encodeURIComponent).join("/");
  // Points an element at a track. One on another origin (a CDN) is fetched
  // with CORS, without which Web Audio (the loudness gain) hears silence.
  const setSource = (el, id) => {
    const url = mediaUrl(id);
    if (new URL(url, location.href).origin !== location.origin) el.crossOrigin = "anonymous";
    else el.removeAttribute("crossorigin");
    el.src = url;
  };
  const serverNow = () => Date.now() + (st.offset ?? 0);
  const posMs = () => Math.max(0, Math.round(media.currentTime * 1000));

  // Shows `text` for 8 s. A message of a `kind` ("play": a track that
  // cannot play) can be taken back early by clearMessage(kind).
  function message(text, kind) {
    const m = $("message");
    if (!text) { m.hidden = true; return; }
    m.textContent = text;
    m.hidden = false;
    message.kind = kind ?? null;
    clearTimeout(message.t);
    message.t = setTimeout(() => { m.hidden = true; }, 8000);
  }

  function clearMessage(kind) {
    if (message.kind !== kind) return;
    clearTimeout(message.t);
    $("message").hidden = true;
    message.kind = null;
  }

  function setConn(text, ok) {
    const c = $("conn");
    c.textContent = text;
    c.className = "conn " + (ok ? "ok" : "bad");
  }

  function setStationStatus(text, kind) {
    const s = $("station-status");
    s.textContent = text;
    s.className = kind || "";
  }

  // ---------- library ----------
  async function loadLibrary() {
    try {
      const r = await fetch("/api/library", { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      st.library = await r.json();
    } catch (e) {
      $("library-note").textContent = `Cannot load the library (${e.message}); reload to retry.`;
      $("library-note").hidden = false;
      return;
    }
    st.byId = new Map(st.library.map((t) => [t.id, t]));
    renderLibrary();
  }

  // Text as the search compares it: lower case, decomposed (NFKD) and without
  // combining marks, so "hoppipolla" finds "Hoppípolla" (as radio broadcast's
  // search does).
  const fold = (text) => text.toLowerCase().normalize("NFKD").replace(/\p{M}/gu, "");

  function renderLibrary() {
    const q = fold($("library-search").value.trim());
    const list = $("track-list");
    list.replaceChildren();
    let shown = 0, matched = 0;
    for (const t of st.library) {
      const hay = fold(`${t.title} ${t.artist ?? ""} ${t.id}`);
      if (q && !q.split(/\s+/).every((w) => hay.includes(w))) continue;
      matched++;
      // A big library renders its first matches only; searching narrows it.
      if (shown >= MAX_LISTED) continue;
      shown++;
      const li = el("li");
      const b = el("button");
      b.type = "button";
      b.dataset.id = t.id;
      if (t.id === st.track) b.setAttribute("aria-current", "true");
      const left = el("span");
      left.append(el("span", "t", t.title));
      if (t.artist) left.append(el("span", "a", t.artist));
      b.append(left, el("span", "d", t.duration_ms ? fmt(t.duration_ms / 1000) : ""));
      b.setAttribute("aria-label", `Play ${t.title}${t.artist ? " by " + t.artist : ""}`);
      b.addEventListener("click", () => chooseTrack(t.id));
      li.append(b);
      list.append(li);
    }
    const note = $("library-note");
    if (st.library.length === 0) {
      note.textContent = "The library is empty.";
      note.hidden = false;
    } else if (shown === 0) {
      note.textContent = "No track matches the search.";
      note.hidden = false;
    } else if (matched > shown) {
      note.textContent = `Showing ${shown} of ${matched} tracks; search to find the others.`;
      note.hidden = false;
    } else {
      note.hidden = true;
    }
  }

  function markCurrent() {
    for (const b of $("track-list").querySelectorAll("button[data-id]")) {
      if (b.dataset.id === st.track) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    }
  }

  // ---------- even loudness ----------
  // Each media element feeds a GainNode of one shared AudioContext, set to
  // the track's gain (linear 10^(dB/20)). An element is routed only once
  // the context runs (after a press, or where autoplay is allowed): one
  // routed into a suspended context would play silence. Until then, and
  // for a track with no measured gain, it plays at its own loudness.
  const loudness = { ctx: null, nodes: new WeakMap(), db: new WeakMap() };

  // The gain the server gives `id`: the tuned station's word, else the
  // library's; null when it has none (not measured, or not measurable).
  function gainOf(id) {
    const s = st.sync;
    const fromSync = st.mode === "listening" && s && s.track === id ? s.gain_db : undefined;
    return fromSync ?? st.byId.get(id)?.gain_db ?? null;
  }

  // The gain of the announced next track (`sync`'s `next`).
  function nextGain(next) {
    return next.gain_db ?? st.byId.get(next.track)?.gain_db ?? null;
  }

  function setGain(el, db) {
    loudness.db.set(el, db);
    const node = loudness.nodes.get(el);
    if (node) node.gain.value = db == null ? 1 : Math.pow(10, db / 20);
  }

  function routeAudio(el) {
    if (loudness.nodes.has(el)) return;
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return;
    if (!loudness.ctx) {
      try {
        loudness.ctx = new AC();
      } catch {
        return;
      }
      // A context the browser suspends (another app took the audio) is
      // resumed while something plays, else the routed element is silent.
      loudness.ctx.addEventListener("statechange", () => {
        if (loudness.ctx.state === "suspended" && !media.paused) loudness.ctx.resume().catch(() => {});
      });
    }
    const ctx = loudness.ctx;
    const attach = () => {
      if (loudness.nodes.has(el) || ctx.state !== "running") return;
      try {
        const node = ctx.createGain();
        ctx.createMediaElementSource(el).connect(node).connect(ctx.destination);
        loudness.nodes.set(el, node);
        setGain(el, loudness.db.get(el) ?? null);
      } catch {
        // Left as it was: it plays at its own loudness.
      }
    };
    if (ctx.state === "running") attach();
    else ctx.resume().then(attach, () => {});
  }

  // ---------- media ----------
  // Loads `id` and seeks to `atMs` once its metadata is known.
  function loadTrack(id, atMs) {
    const t = st.byId.get(id);
    st.track = id;
    setGain(media, gainOf(id));
    // Another track: what the last one could not do is no longer news.
    st.failed = null;
    st.retry = null;
    clearMessage("play");
    clearMessage("retry");
    $("np-title").textContent = t ? t.title : id;
    $("np-artist").textContent = t ? (t.artist ?? "") : "not in this server's library";
    media.hidden = !(t && t.mime.startsWith("video/"));
    setSource(media, id);
    media.playbackRate = 1;
    st.nudging = false;
    // Not playing until the first frames are in; `playing` clears it.
    st.waiting = true;
    if (atMs > 0) {
      const m = media;
      m.addEventListener("loadedmetadata", () => {
        if (m === media) m.currentTime = atMs / 1000;
      }, { once: true });
    }
    $("play").disabled = st.mode === "listening";
    $("seek").disabled = st.mode === "listening";
    markCurrent();
  }

  // A listener's page shows the station's controls only: mute, volume and
  // leaving the station (body.listening hides play and seek).
  function showMode() {
    document.body.classList.toggle("listening", st.mode === "listening");
    if (st.mode !== "listening") $("leave-confirm").hidden = true;
  }

  function setMuted(muted) {
    media.muted = muted;
    $("mute").textContent = muted ? "Unmute" : "Mute";
    $("mute").setAttribute("aria-pressed", String(muted));
  }

  async function play() {
    const track = st.track;
    st.intent = true;
    try {
      await media.play();
      $("gate").hidden = true;
      routeAudio(media);
      return true;
    } catch (e) {
      // A refusal that comes back after the track changed is old news.
      if (st.track !== track) return false;
      if (e.name === "NotAllowedError") {
        $("gate").hidden = false;
        $("gate-button").focus();
        listenStatus();
      } else if (e.name !== "AbortError" && st.failed !== track && st.retry?.track !== track) {
        message(`Cannot play: ${e.message}`, "play");
      }
      return false;
    }
  }

  // While tuned to a station, a library track is played only after asking:
  // playing it means leaving the station.
  function chooseTrack(id) {
    if (st.mode === "listening") {
      const t = st.byId.get(id);
      st.leaveFor = id;
      $("leave-text").textContent =
        `You are listening to ${st.tuned}. Leave the station to play “${t ? t.title : id}”?`;
      $("leave-confirm").hidden = false;
      $("leave-play").focus();
      return;
    }
    $("resume-note").hidden = true;
    loadTrack(id, 0);
    play();
    if (st.mode === "live") sendUpdate();
    else saveSession(true);
  }

  // A pause the page means (its button, Space, nothing left to play), as
  // against one the browser makes when a fetch fails: after a failure a
  // private or live page plays on if it had not meant to pause.
  function pause() {
    st.intent = false;
    media.pause();
  }

  function togglePlay() {
    if (!st.track || st.mode === "listening") return;
    if (media.paused) play(); else pause();
  }

  // The library's entry after `id` in order, passing over the tracks the
  // station's listeners could not play; null when none is left.
  function followingTrack(id) {
    const n = st.library.length;
    const i = st.library.findIndex((t) => t.id === id);
    for (let k = 1; k <= n; k++) {
      const t = st.library[(i + k + n) % n];
      if (!st.unplayable.has(t.id)) return t;
    }
    return null;
  }

  // Live or private: plays `t` from its start.
  function startTrack(t) {
    loadTrack(t.id, 0);
    sendUpdate(); // the new track, not yet playing; `playing` follows
    play();
  }

  function nextTrack() {
    const next = followingTrack(st.track);
    if (next) startTrack(next);
  }

  // Live: every listener of the station failed to play the track it plays
  // (`track_failed`). The station moves on and passes over that track from
  // then on, as `radio broadcast` does; with nothing left, it pauses.
  function trackFailed(m) {
    if (m.station !== st.station || m.track !== st.track) return;
    st.unplayable.add(m.track);
    const title = st.byId.get(m.track)?.title ?? m.track;
    const who = m.listeners === 1
      ? "The station's one listener"
      : `All ${m.listeners} of the station's listeners`;
    const why = m.reason ? ` (${m.reason})` : "";
    const next = followingTrack(m.track);
    if (!next) {
      pause(); // its `pause` event tells the listeners
      message(`${who} could not play “${title}”${why}; nothing else to play, so the station pauses.`);
      return;
    }
    message(`${who} could not play “${title}”${why}; skipping to “${next.title}”.`);
    startTrack(next);
  }

  function updateControls() {
    $("play").textContent = media.paused ? "▶" : "❚❚";
    $("play").setAttribute("aria-label", media.paused ? "Play" : "Pause");
    const d = isFinite(media.duration) ? media.duration : 0;
    const seek = $("seek");
    seek.max = String(d);
    if (document.activeElement !== seek) seek.value = String(media.currentTime);
    $("time").textContent = `${fmt(media.currentTime)} / ${fmt(d)}`;
  }

  // ---------- private sessions ----------
  async function resumeSession() {
    let s;
    try {
      const r = await fetch("/api/session", { cache: "no-store" });
      if (!r.ok) return;
      s = await r.json();
    } catch { return; }
    if (!s.track || st.mode !== "private" || st.track) return;
    if (!st.byId.has(s.track)) return;
    loadTrack(s.track, s.position_ms);
    const t = st.byId.get(s.track);
    const note = $("resume-note");
    note.textContent = `Resuming “${t.title}” at ${fmt(s.position_ms / 1000)}; press play.`;
    note.hidden = false;
  }

  function saveSession(force) {
    if (st.mode !== "private" || !st.track) return;
    const now = Date.now();
    if (!force && now - st.lastSave < SAVE_EVERY_MS) return;
    st.lastSave = now;
    fetch("/api/session", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ track: st.track, position_ms: posMs() }),
      keepalive: true,
    }).catch(() => {});
  }

  // ---------- connection ----------
  function connect() {
    clearTimeout(st.reconnectTimer);
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    let ws;
    try { ws = new WebSocket(url); } catch (e) { scheduleReconnect(); return; }
    st.ws = ws;
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      handle(m);
    };
    ws.onclose = () => {
      if (st.ws !== ws) return;
      st.ws = null;
      st.connected = false;
      clearInterval(st.pingTimer);
      stopHeartbeat();
      if (st.mode === "listening") setStationStatus("connection lost; reconnecting…", "warn");
      scheduleReconnect();
    };
  }

  function scheduleReconnect(afterMs) {
    clearTimeout(st.reconnectTimer);
    // Exponential backoff with jitter (half fixed, half random), so a
    // server restart is not met by every player at the same instant.
    const base = afterMs ?? Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** st.attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    st.attempt++;
    setConn(`disconnected; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${st.attempt})`, false);
    st.reconnectTimer = setTimeout(connect, delay);
  }

  function send(obj) {
    if (st.ws && st.ws.readyState === WebSocket.OPEN) {
      st.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  function ping() {
    send({ type: "ping", id: ++st.pingId, client_time_ms: Date.now() });
  }

  function onPong(m) {
    if (typeof m.client_time_ms !== "number") return;
    const now = Date.now();
    const rtt = now - m.client_time_ms;
    if (rtt < 0) return;
    const offset = m.server_time_ms - (m.client_time_ms + rtt / 2);
    st.samples.push({ rtt, offset });
    if (st.samples.length > CLOCK_SAMPLES) st.samples.shift();
    // The sample with the smallest round trip carries the least queueing skew.
    const best = st.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    st.offset = best.offset;
    st.rtt = best.rtt;
    $("offset").textContent = `${st.offset >= 0 ? "+" : ""}${Math.round(st.offset)} ms`;
    $("rtt").textContent = `${Math.round(st.rtt)} ms`;
  }

  function handle(m) {
    switch (m.type) {
      case "welcome":
        st.connected = true;
        st.attempt = 0;
        setConn("connected", true);
        st.samples = [];
        // A burst of pings for a quick first offset, then a steady rate.
        for (let i = 0; i < 5; i++) setTimeout(ping, i * 150);
        clearInterval(st.pingTimer);
        st.pingTimer = setInterval(ping, PING_EVERY_MS);
        send({ type: "list_stations" });
        if (st.mode === "live" && st.station) {
          send(startMessage());
        } else if (st.mode === "listening" && st.tuned) {
          send({ type: "tune_in", station: st.tuned });
        }
        break;
      case "pong":
        onPong(m);
        break;
      case "broadcasting":
        st.resumeToken = m.resume_token;
        enterLive(m.station);
        break;
      case "stopped":
        if (st.mode === "live") leaveLive();
        break;
      case "tuned":
        st.stationLive = m.live;
        st.by = m.reason ?? "live";
        setStationStatus(m.live ? "live; waiting for the broadcaster's state…" : "offline; waiting for it to go live", m.live ? "warn" : "bad");
        loadRecent(m.station);
        break;
      case "tuned_out":
        break;
      case "sync":
        if (st.mode === "listening" && m.station === st.tuned) applySync(m);
        break;
      case "broadcaster_online":
        send({ type: "list_stations" });
        if (m.station === st.tuned) {
          st.stationLive = true;
          st.by = m.reason ?? "live";
          setStationStatus(st.by === "auto"
            ? "live; the station plays its own programme again…"
            : "live; waiting for the broadcaster's state…", "warn");
        }
        break;
      case "broadcaster_offline":
        send({ type: "list_stations" });
        if (m.station === st.tuned) {
          st.stationLive = false;
          st.sync = null;
          dropNext();
          showNext(null);
          media.pause();
          setStationStatus(`offline (${m.reason}); you stay tuned in case it comes back`, "bad");
          $("drift").textContent = "–";
          setRate(1);
        }
        break;
      case "stations":
        renderStations(m.stations);
        break;
      case "ack":
        break;
      case "track_failed":
        if (st.mode === "live") trackFailed(m);
        break;
      case "error":
        onError(m);
        break;
      case "server_shutdown":
        setConn("server restarting…", false);
        st.attempt = 0;
        if (st.ws) { const ws = st.ws; st.ws = null; ws.close(); }
        clearInterval(st.pingTimer);
        stopHeartbeat();
        scheduleReconnect(Math.max(m.reconnect_after_ms ?? 1000, BACKOFF_MIN_MS));
        break;
      default:
        break;
    }
  }

  function onError(m) {
    if (m.request_type === "start_broadcasting") {
      if (st.mode === "live") leaveLive();
      if (m.code === "unauthorized") {
        $("station-key").hidden = false;
        $("station-key-label").hidden = false;
        $("station-key").focus();
      }
      message(`Cannot go live: ${m.message}`);
    } else if (m.request_type === "tune_in") {
      tuneOut();
      message(`Cannot tune in: ${m.message}`);
    } else if (m.code === "rate_limited" && m.request_type === "list_stations") {
      // Asked too often (--list-rate): the next refresh brings the list.
    } else if ((m.code === "not_owner" || m.code === "not_live") && st.mode === "live") {
      leaveLive();
      message(`You are no longer live: ${m.message}`);
    } else {
      message(`${m.code}: ${m.message}`);
    }
  }

  // ---------- stations ----------
  function renderStations(list) {
    const ul = $("station-list");
    ul.replaceChildren();
    const live = list.filter((s) => s.live !== false);
    $("no-stations").hidden = live.length > 0;
    for (const s of live) {
      const li = el("li");
      const b = el("button");
      b.type = "button";
      b.dataset.station = s.station;
      const left = el("span");
      left.append(el("span", "t", s.station));
      const t = s.track ? st.byId.get(s.track) : null;
      const name = s.title ?? t?.title ?? s.track;
      const by = s.artist ?? t?.artist;
      left.append(el("span", "a", s.track ? `${s.playing ? "▶" : "❚❚"} ${by ? by + " – " : ""}${name}` : "no track yet"));
      const n = s.listeners;
      b.append(left, el("span", "d", `${n} listener${n === 1 ? "" : "s"}`));
      const mine = st.mode === "live" && s.station === st.station;
      const tuned = st.mode === "listening" && s.station === st.tuned;
      if (tuned) {
        $("tuned-listeners").textContent = `${n} listener${n === 1 ? "" : "s"} (you included)`;
        showStationTrack(s);
      }
      if (mine) {
        b.disabled = true;
        b.setAttribute("aria-label", `${s.station}: your station, ${n} listeners`);
        $("live-listeners").textContent = `${n} listener${n === 1 ? "" : "s"}`;
      } else {
        b.setAttribute("aria-label", `Tune in to ${s.station}, ${n} listeners`);
        if (tuned) b.setAttribute("aria-current", "true");
        b.addEventListener("click", () => tuneIn(s.station));
      }
      li.append(b);
      ul.append(li);
    }
  }

  // ---------- live (broadcaster) ----------
  function goLive(name) {
    if (!STATION_RE.test(name)) {
      message("A station name is 1-64 of A-Z a-z 0-9 . _ -");
      return;
    }
    if (st.mode === "listening") tuneOut();
    st.station = name;
    st.resumeToken = null;
    if (!send(startMessage())) {
      message("Not connected; try again in a moment.");
    }
  }

  function startMessage() {
    const key = $("station-key").value;
    return {
      type: "start_broadcasting",
      station: st.station,
      resume_token: st.resumeToken ?? undefined,
      key: key ? key : undefined,
    };
  }

  function enterLive(name) {
    const wasLive = st.mode === "live";
    if (!wasLive) st.unplayable.clear();
    st.mode = "live";
    st.station = name;
    $("mode-badge").textContent = "live";
    $("mode-badge").className = "badge live";
    $("live-form").hidden = true;
    $("live-info").hidden = false;
    $("live-title").textContent = "On air";
    $("live-name").textContent = name;
    const link = `${location.origin}/?station=${encodeURIComponent(name)}`;
    $("live-link").href = link;
    $("live-link").textContent = link;
    if (!wasLive) $("live-listeners").textContent = "0 listeners";
    sendUpdate();
    startHeartbeat();
    send({ type: "list_stations" });
  }

  function leaveLive() {
    stopHeartbeat();
    st.mode = "private";
    st.station = null;
    st.resumeToken = null;
    $("mode-badge").textContent = "private";
    $("mode-badge").className = "badge";
    $("live-form").hidden = false;
    $("live-info").hidden = true;
    $("live-title").textContent = "Go live";
    send({ type: "list_stations" });
  }

  function stopLive() {
    if (st.mode !== "live") return;
    send({ type: "stop_broadcasting", station: st.station });
    leaveLive();
  }

  function broadcastPlaying() {
    return !media.paused && !media.ended && !st.waiting;
  }

  function sendUpdate() {
    if (st.mode !== "live" || !st.track) return;
    const t = st.byId.get(st.track);
    const msg = {
      type: "update",
      station: st.station,
      track: st.track,
      position_ms: posMs(),
      playing: broadcastPlaying(),
      at_server_ms: Math.round(serverNow()),
    };
    const d = isFinite(media.duration) ? Math.round(media.duration * 1000) : t?.duration_ms;
    if (d) msg.duration_ms = d;
    send(msg);
  }

  function startHeartbeat() {
    stopHeartbeat();
    st.heartbeatTimer = setInterval(() => {
      if (st.mode !== "live" || !st.track) return;
      send({
        type: "heartbeat",
        station: st.station,
        position_ms: posMs(),
        playing: broadcastPlaying(),
        at_server_ms: Math.round(serverNow()),
      });
    }, HEARTBEAT_MS);
  }

  function stopHeartbeat() {
    clearInterval(st.heartbeatTimer);
    st.heartbeatTimer = null;
  }

  // ---------- listening ----------
  function tuneIn(name) {
    if (!STATION_RE.test(name)) {
      message(`“${name}” is not a station name (1-64 of A-Z a-z 0-9 . _ -)`);
      return;
    }
    if (st.mode === "live") stopLive();
    saveSession(true);
    media.pause();
    dropNext();
    showNext(null);
    st.left = null;
    st.mode = "listening";
    st.tuned = name;
    st.sync = null;
    st.drift = null;
    showMode();
    $("tuned-listeners").textContent = "";
    $("mode-badge").textContent = "listening";
    $("mode-badge").className = "badge listening";
    $("tuned-panel").hidden = false;
    $("live-panel").hidden = true;
    $("tuned-name").textContent = name;
    showInApp(name);
    $("seek").disabled = true;
    $("play").disabled = true;
    setStationStatus("tuning in…", "warn");
    const url = new URL(location.href);
    url.searchParams.set("station", name);
    history.replaceState(null, "", url);
    send({ type: "tune_in", station: name });
  }

  // The station's stream, for any radio app (VLC, a phone's radio app):
  // its absolute URL to copy, and its playlist to open.
  function showInApp(name) {
    const stream = new URL(`/stations/${encodeURIComponent(name)}/stream`, location.href).href;
    $("stream-link").href = stream;
    $("stream-link").textContent = stream;
    $("m3u-link").href = `${stream}.m3u`;
  }

  function tuneOut() {
    if (st.mode !== "listening") return;
    send({ type: "tune_out" });
    st.mode = "private";
    showMode();
    st.tuned = null;
    st.sync = null;
    st.drift = null;
    dropNext();
    showNext(null);
    media.pause();
    media.playbackRate = 1;
    $("mode-badge").textContent = "private";
    $("mode-badge").className = "badge";
    $("tuned-panel").hidden = true;
    $("live-panel").hidden = false;
    $("play").disabled = !st.track;
    $("seek").disabled = !st.track;
    $("drift").textContent = "–";
    $("rate").textContent = "1.00×";
    const url = new URL(location.href);
    url.searchParams.delete("station");
    history.replaceState(null, "", url);
    send({ type: "list_stations" });
  }

  // The station's position now, in ms: never past its track's end, where a
  // station waits for its broadcaster's next state (docs/protocol.md).
  function stationPosition() {
    const s = st.sync;
    if (!s) return null;
    if (!s.playing) return s.position_ms;
    const p = s.position_ms + (serverNow() - s.server_time_ms);
    return s.duration_ms ? Math.min(p, s.duration_ms) : p;
  }

  // Whether the playing station is at (or past) the end of its track or of
  // the media file: then nothing is sought or played until its next state.
  function pastEnd() {
    const s = st.sync;
    if (!s || !s.playing) return false;
    const target = stationPosition();
    const d = media.duration;
    return (s.duration_ms && target >= s.duration_ms) || (isFinite(d) && target / 1000 >= d - 0.05);
  }

  function showEnded() {
    setStationStatus("live; track ended, waiting for the station", "warn");
    $("drift").textContent = "–";
    setRate(1);
  }

  // What the station plays, by its own title and artist (the server's
  // library fills them), else by the library's, else by the track id.
  function showStationTrack(s) {
    if (!s.track) return;
    const t = st.byId.get(s.track);
    $("np-title").textContent = s.title ?? t?.title ?? s.track;
    $("np-artist").textContent = t ? (s.artist ?? t.artist ?? "") : "not in this server's library";
  }

  // What the station plays next, when it says (`next`).
  function showNext(s) {
    const n = st.mode === "listening" ? s?.next : null;
    const p = $("np-next");
    p.hidden = !n;
    if (!n) return;
    const t = st.byId.get(n.track);
    const by = n.artist ?? t?.artist;
    p.textContent = `Next: ${n.title ?? t?.title ?? n.track}${by ? " · " + by : ""}`;
  }

  // ---------- recently played ----------
  // The tuned station's last plays: fetched once at tune-in, then kept up
  // from the syncs this page gets, so a track change costs the server no
  // request per listener.
  const RECENT_SHOWN = 10;
  function loadRecent(name) {
    st.recent = [];
    renderRecent();
    fetch(`/api/stations/${encodeURIComponent(name)}/history`, { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((h) => {
        if (!h || st.tuned !== name) return;
        st.recent = h.tracks;
        renderRecent();
      })
      .catch(() => {});
  }

  // A sync that starts a play the list lacks: a new track, or the same one
  // again after its end.
  function noteRecent(s) {
    const started = s.server_time_ms - s.position_ms;
    const last = st.recent[0];
    const again = last && last.track === s.track && last.duration_ms &&
      started >= last.started_at_ms + last.duration_ms - 1000;
    if (last && last.track === s.track && !again) return;
    st.recent.unshift({
      track: s.track, title: s.title, artist: s.artist, duration_ms: s.duration_ms,
      started_at_ms: started, by: st.by,
    });
    st.recent.length = Math.min(st.recent.length, 50);
    renderRecent();
  }

  function renderRecent() {
    const ol = $("recent-list");
    ol.replaceChildren();
    // On a station the server runs, what a broadcaster played is marked.
    const mixed = st.recent.some((p) => p.by === "auto");
    for (const p of st.recent.slice(0, RECENT_SHOWN)) {
      const li = el("li");
      const left = el("span");
      const t = st.byId.get(p.track);
      left.append(el("span", "t", p.title ?? t?.title ?? p.track));
      const who = mixed && p.by === "live" ? " · live" : "";
      left.append(el("span", "a", `${p.artist ?? t?.artist ?? ""}${who}`));
      const at = new Date(p.started_at_ms - (st.offset ?? 0));
      li.append(left, el("span", "d", at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
      ol.append(li);
    }
    $("recent").hidden = st.recent.length === 0;
  }

  // ---------- the next track, ready ----------
  // Plans, at each sync, the fetch of the announced next track and the
  // switch to it at the boundary.
  function planNext(s) {
    const next = s.next ?? null;
    if (st.ready && st.ready.next.track !== next?.track) dropNext();
    const plan = next && s.playing && s.duration_ms && s.track === st.track
      ? `${s.track}\n${next.track}` : null;
    if (plan !== st.planned) {
      clearTimeout(st.preloadTimer);
      st.planned = plan;
      if (plan && !st.ready) {
        // Each listener fetches at its own moment: its share of the spread
        // before the end, or of what is left of a shorter track.
        const left = s.duration_ms - stationPosition();
        const lead = PRELOAD_MIN_MS + st.share * (PRELOAD_MAX_MS - PRELOAD_MIN_MS);
        const wait = left > lead ? left - lead : st.share * Math.max(0, left - PRELOAD_MIN_MS);
        st.preloadTimer = setTimeout(() => preloadNext(next), wait);
      }
    }
    armSwitch();
  }

  function preloadNext(next) {
    if (st.mode !== "listening" || st.ready || st.sync?.next?.track !== next.track) return;
    // The other element may still be sounding the last track's tail.
    if (!standby.paused) { st.preloadTimer = setTimeout(() => preloadNext(next), 100); return; }
    setSource(standby, next.track);
    // At the next track's own gain from its first sample: routed now when
    // the audio context runs already (the playing element is routed).
    setGain(standby, nextGain(next));
    if (loudness.ctx) routeAudio(standby);
    standby.load();
    st.ready = { next, el: standby };
    armSwitch();
  }

  function dropNext() {
    clearTimeout(st.preloadTimer);
    clearTimeout(st.switchTimer);
    st.planned = null;
    if (!st.ready) return;
    const el = st.ready.el;
    st.ready = null;
    el.removeAttribute("src");
    el.load();
  }

  // When the playing track ends: `left` ms from now, and `end`, where in
  // the element's own seconds. Read on the element's clock (so the next
  // track follows the sound without a gap) when the file lasts as long as
  // the station's track or longer (the station's end then cuts it); on the
  // station's timeline when the file ends well before it (the station
  // holds it longer: silence until the timeline's end, as without a next
  // track). `null` while unknown.
  function trackEnd() {
    const s = st.sync;
    if (!s || !s.playing || !s.duration_ms || media.readyState < 1) return null;
    const station = s.duration_ms / 1000;
    const file = isFinite(media.duration) ? media.duration : Infinity;
    if (file < station - 0.3) {
      return { left: s.duration_ms - stationPosition(), end: file, timeline: true };
    }
    const end = Math.min(file, station);
    return { left: (end - media.currentTime) * 1000 / media.playbackRate, end, timeline: false };
  }

  // Sets the switch for the end of the playing track: looked at again near
  // the end, then started that much early that the next one's clock starts
  // at the end.
  function armSwitch() {
    clearTimeout(st.switchTimer);
    if (!st.ready || st.mode !== "listening" || !$("gate").hidden) return;
    // Not started yet (its `playing` arms it), unless it played to its end.
    if (media.paused && !media.ended) return;
    const at = trackEnd();
    if (!at) return;
    const left = at.left - st.startLead;
    st.switchTimer = left > 400
      ? setTimeout(armSwitch, left - 250)
      : setTimeout(() => switchToNext(at.end), Math.max(0, left));
  }

  // The standby element, which holds the next track, takes over: it starts
  // now while the old one plays out its last moments to `oldEnd` (seconds
  // of its own; 0: stop it now), and the station's timeline goes on from
  // the old track's end until the station's own next state comes.
  function switchToNext(oldEnd) {
    const ready = st.ready;
    const s = st.sync;
    if (!ready || !s || st.mode !== "listening") return;
    clearTimeout(st.switchTimer);
    st.ready = null;
    st.planned = null;
    const old = media;
    const el = ready.el;
    st.left = st.track;
    const tail = Math.max(0, (oldEnd - old.currentTime) * 1000 / old.playbackRate);
    const endsAt = performance.now() + tail;
    // The old one ends by itself at its file's end; at the station's end, or
    // now, it is paused.
    if (tail === 0) old.pause();
    else if (!(oldEnd >= old.duration - 0.01)) setTimeout(() => { if (old !== media) old.pause(); }, tail);
    el.muted = old.muted;
    el.volume = old.volume;
    el.playbackRate = 1;
    setGain(el, nextGain(ready.next));
    old.id = "media-next";
    el.id = "media";
    media = el;
    standby = old;
    const t = st.byId.get(ready.next.track);
    old.hidden = true;
    el.hidden = !(t && t.mime.startsWith("video/"));
    st.track = ready.next.track;
    st.failed = null;
    st.retry = null;
    st.nudging = false;
    st.waiting = true;
    clearMessage("play");
    clearMessage("retry");
    if (s.playing && s.duration_ms) {
      // Until the station's own `sync`: its next track from the last one's
      // end on its timeline.
      st.sync = {
        ...s, track: ready.next.track, title: ready.next.title, artist: ready.next.artist,
        duration_ms: ready.next.duration_ms, gain_db: nextGain(ready.next) ?? undefined,
        next: undefined, position_ms: 0,
        server_time_ms: s.server_time_ms + s.duration_ms - s.position_ms, cause: "next",
      };
      showStationTrack(st.sync);
      showNext(st.sync);
    }
    markCurrent();
    if (!$("gate").hidden) return;
    play();
    learnStart(el, endsAt);
  }

  // How late the new element's clock started, against the old one's end:
  // the start is asked that much earlier next time.
  function learnStart(el, endsAt) {
    const from = el.currentTime;
    const look = () => {
      if (el !== media || el.paused) return;
      if (el.currentTime === from) { setTimeout(look, 4); return; }
      const startedAt = performance.now() - (el.currentTime - from) * 1000 / el.playbackRate;
      const gap = startedAt - endsAt;
      st.gaps.push(Math.round(gap));
      if (st.gaps.length > 20) st.gaps.shift();
      // Half the error: a start's latency varies by an audio buffer or so.
      st.startLead = Math.min(MAX_START_LEAD_MS, Math.max(0, st.startLead + gap / 2));
    };
    setTimeout(look, 4);
  }

  function applySync(s) {
    // A state of the track this page just left at its end (a heartbeat the
    // broadcaster sent just before it) is no news: the page plays the next
    // one. Any other state of it (played again, sought back) is.
    if (st.left !== null) {
      const late = s.track === st.left && s.track !== st.track && s.playing && s.duration_ms
        && s.position_ms + (serverNow() - s.server_time_ms) >= s.duration_ms - LATE_STATE_MS;
      if (late) return;
      st.left = null;
    }
    // The station moved on before this page's own switch (it runs behind):
    // the fetched next track takes over now.
    if (st.ready && s.track !== st.track && s.track === st.ready.next.track) switchToNext(0);
    st.sync = s;
    st.stationLive = true;
    if (s.cause === "update" || s.cause === "tune_in") noteRecent(s);
    if (s.track !== st.track) {
      send({ type: "list_stations" });
      loadTrack(s.track, 0);
      const m = media;
      m.addEventListener("loadedmetadata", () => { if (m === media) correct(true); }, { once: true });
    }
    showStationTrack(s);
    showNext(s);
    planNext(s);
    if (s.playing) {
      listenStatus();
      // Past the end, an ended file must not start again (play() on an
      // ended element plays it from 0): wait for the station's next state.
      if (pastEnd()) { showEnded(); return; }
      // While "Press to listen" is up, wait for the press, and a track that
      // cannot play here waits for the next: retrying on every sync would
      // only be refused again. One that failed to load waits for its retry.
      if (!$("gate").hidden || st.failed === st.track || st.retry?.waiting) return;
      if (media.paused && media.readyState >= 1) {
        correct(true);
        play();
      } else if (media.paused) {
        play();
      }
    } else {
      setStationStatus("live; paused by the broadcaster", "warn");
      if (!media.paused) media.pause();
      correct(true);
    }
  }

  // What a listener is told while the station plays: "playing in sync" only
  // once sound really plays; "press to listen" while the browser waits for
  // a press; "starting" while the first frames load.
  function listenStatus() {
    const s = st.sync;
    if (st.mode !== "listening" || !s || !s.playing || pastEnd()) return;
    if (st.failed === st.track) {
      setStationStatus("live; this browser cannot play the track; waiting for the next", "bad");
    } else if (st.retry?.waiting) {
      setStationStatus(`live; the track did not load (${st.retry.why}); ${st.retry.note}`, "warn");
    } else if (!$("gate").hidden) {
      setStationStatus("live; press to listen", "warn");
    } else if (media.paused || st.waiting) {
      setStationStatus("live; starting…", "warn");
    } else if (!st.byId.has(s.track)) {
      setStationStatus(`live; playing “${s.track}”, which this library lacks`, "ok");
    } else {
      setStationStatus("live; playing in sync", "ok");
    }
  }

  // One step of the sync engine. `hard` seeks whatever the drift.
  function correct(hard) {
    if (st.mode !== "listening" || !st.sync) return;
    if (media.readyState < 1 || media.seeking) return;
    const target = stationPosition();
    if (target === null) return;
    if (pastEnd()) { showEnded(); return; } // wait for the station's next track
    const drift = media.currentTime * 1000 - target;
    st.drift = drift;
    // Nothing plays yet (waiting for a press, or loading): no drift to show.
    const sounding = !media.paused || !st.sync.playing;
    $("drift").textContent = sounding ? `${drift >= 0 ? "+" : ""}${Math.round(drift)} ms` : "–";
    if (!st.sync.playing) {
      if (Math.abs(drift) > NUDGE_OVER_MS) media.currentTime = target / 1000;
      setRate(1);
      return;
    }
    // Paused here means "about to play" (or refused): only a hard step seeks.
    if (media.paused && !hard) return;
    const now = performance.now();
    const settled = now - Math.max(st.lastSeekAt, st.lastPlayingAt) > 500;
    if (st.seekCheck && !media.paused && !st.waiting && settled) {
      // Learn how late seeks land, so the next one is aimed ahead by that:
      // measured only once the media has played half a second since.
      st.seekCheck = false;
      st.seekLead = Math.min(MAX_SEEK_LEAD_MS, Math.max(0, st.seekLead - drift));
    }
    if (hard || Math.abs(drift) > SEEK_OVER_MS) {
      st.lastSeekAt = now;
      st.seekCheck = true;
      setRate(1);
      st.nudging = false;
      media.currentTime = (target + st.seekLead) / 1000;
      return;
    }
    if (st.nudging && Math.abs(drift) < NUDGE_UNTIL_MS) st.nudging = false;
    else if (!st.nudging && Math.abs(drift) > NUDGE_OVER_MS) st.nudging = true;
    if (st.nudging) {
      // Behind (negative drift): a little faster; ahead: a little slower.
      const k = Math.min(MAX_NUDGE, 0.01 + Math.abs(drift) / 5000);
      setRate(drift < 0 ? 1 + k : 1 - k);
    } else {
      setRate(1);
    }
  }

  function setRate(r) {
    if (media.playbackRate !== r) media.playbackRate = r;
    $("rate").textContent = `${r.toFixed(2)}×`;
  }

  // ---------- events ----------
  // Events of the playing element only: the standby's (a fetch, the last
  // track's tail) are its own business.
  const onMedia = (type, fn) => {
    for (const m of [media, standby]) {
      m.addEventListener(type, (e) => { if (e.target === media) fn(e); });
    }
  };
  // A next track that cannot be fetched is not switched to: at the boundary
  // it loads as any track does, and says why it cannot play.
  for (const m of [media, standby]) {
    m.addEventListener("error", () => { if (st.ready?.el === m) dropNext(); });
  }
  // A broadcaster says "playing" only once frames really play (`playing`),
  // and "not playing" while it stalls (`waiting`), so listeners never run
  // ahead of it while it buffers.
  onMedia("play", () => { updateControls(); saveSession(true); });
  onMedia("playing", () => {
    st.waiting = false;
    // A track that failed to load plays now: its retries are over.
    if (st.retry && st.retry.track === st.track) {
      st.retry = null;
      clearMessage("retry");
    }
    st.lastPlayingAt = performance.now();
    sendUpdate();
    listenStatus();
    armSwitch();
  });
  onMedia("pause", () => { updateControls(); sendUpdate(); saveSession(true); });
  // Dragging the seek bar seeks many times a second: one update per 150 ms.
  onMedia("seeked", () => {
    if (st.mode !== "live" || st.seekUpdate) return;
    st.seekUpdate = setTimeout(() => { st.seekUpdate = null; sendUpdate(); }, 150);
  });
  onMedia("waiting", () => {
    if (!st.waiting) { st.waiting = true; sendUpdate(); }
    listenStatus();
  });
  onMedia("loadedmetadata", () => {
    updateControls();
    // Its bytes demux: a later failure of this load is not its format.
    if (st.retry && st.retry.track === st.track) st.retry.loaded = true;
  });
  onMedia("timeupdate", () => { updateControls(); saveSession(false); });
  onMedia("ended", () => {
    if (st.mode === "live") nextTrack();
    else if (st.mode === "private") saveSession(true);
    else if (st.mode === "listening" && st.ready && trackEnd()?.timeline === false) switchToNext(0);
    else if (st.mode === "listening" && st.sync) { showEnded(); armSwitch(); }
  });
  // A track that failed: was it its file, or its fetch? Chromium says
  // "Format error" alike for an unknown format, an HTTP error status (a
  // 503 from a server out of descriptors at a track change's herd) and a
  // dropped connection, so after a jittered wait the page asks the URL
  // itself (HEAD): gone (404, 410, another 4xx) or there and undecodable
  // is a track that cannot play; a 5xx, 408, 429 or no answer at all is a
  // fetch to try again, after Retry-After when the server says, at the
  // station's position. A file that is there but failed twice without its
  // metadata ever loading is taken for a format this browser lacks; and
  // after MEDIA_RETRIES reloads, the page gives up. Each wait doubles and
  // has a random part, so that the thousands of players a track change
  // failed do not come back in step.
  onMedia("error", () => {
    const err = media.error;
    // Aborted: the page itself replaced the source.
    if (!err || !st.track || err.code === 1 || st.failed === st.track) return;
    const why = err.message || `media error ${err.code}`;
    let r = st.retry;
    if (!r || r.track !== st.track) {
      // Chromium has paused the element by now: a listener follows the
      // station; a private or live page goes on as it meant to.
      const play = !media.paused || (st.mode !== "listening" && st.intent);
      r = st.retry = { track: st.track, tries: 0, strikes: 0, loaded: false, atMs: posMs(), play };
    }
    if (r.waiting) return;
    // Not playing until it loads again: a live page says so to its
    // listeners, who would otherwise run on without it.
    if (!st.waiting) { st.waiting = true; sendUpdate(); }
    const named = err.code === 3 || DECODER_RE.test(why);
    const loaded = r.loaded;
    r.loaded = false;
    r.why = why;
    r.waiting = true;
    r.note = "checking…";
    listenStatus();
    const wait = named ? 0 : jitter(MEDIA_CHECK_MS * 2 ** r.tries);
    setTimeout(() => checkMedia(r, named, loaded), wait);
  });

  // Half fixed, half random: `ms` spread over [ms/2, ms].
  const jitter = (ms) => Math.round(ms / 2 + Math.random() * ms / 2);

  // What the URL of track `id` answers now: its status (0: no answer, a
  // network failure) and the server's Retry-After in ms, if any.
  async function probeMedia(id) {
    try {
      const res = await fetch(mediaUrl(id), { method: "HEAD", cache: "no-store" });
      const ra = Number(res.headers.get("Retry-After"));
      return { status: res.status, text: res.statusText, retryAfterMs: ra > 0 ? ra * 1000 : 0 };
    } catch (e) {
      return { status: 0, text: e.message, retryAfterMs: 0 };
    }
  }

  async function checkMedia(r, named, loaded) {
    if (st.retry !== r) return;
    const p = await probeMedia(r.track);
    if (st.retry !== r) return;
    const transient = p.status === 0 || p.status >= 500 || [408, 425, 429].includes(p.status);
    const said = p.status ? `HTTP ${p.status}${p.text ? " " + p.text : ""}` : `no answer: ${p.text}`;
    if (!transient && !(p.status >= 200 && p.status < 300)) {
      cannotPlay(r, said);
      return;
    }
    if (!transient && (named || (!loaded && ++r.strikes >= 2))) {
      cannotPlay(r, r.why);
      return;
    }
    if (r.tries >= MEDIA_RETRIES) {
      cannotPlay(r, `${transient ? said : r.why}; gave up after ${r.tries} retries`);
      return;
    }
    r.tries++;
    if (transient) r.why = said;
    // The file is there again: at once. Still failing: after a wait
    // (doubling, and never shorter than the server's Retry-After) plus up
    // to half of it again at random.
    const base = Math.max(p.retryAfterMs, Math.min(MEDIA_RETRY_MAX_MS, MEDIA_RETRY_MS * 2 ** (r.tries - 1)));
    const wait = transient ? Math.round(base + Math.random() * base / 2) : 0;
    r.note = `retrying${wait ? ` in ${(wait / 1000).toFixed(1)} s` : ""} (${r.tries} of ${MEDIA_RETRIES})`;
    const t = st.byId.get(r.track);
    message(`${t ? t.title : r.track} did not load (${r.why}); ${r.note}`, "retry");
    listenStatus();
    setTimeout(() => reloadMedia(r), wait);
  }

  // Loads `r`'s track again: a listener at the station's position then, a
  // private or live page where it was.
  function reloadMedia(r) {
    if (st.retry !== r || st.track !== r.track) return;
    r.waiting = false;
    const m = media;
    setSource(m, r.track);
    m.load();
    st.waiting = true;
    m.addEventListener("loadedmetadata", () => {
      if (m !== media || st.track !== r.track) return;
      if (st.mode === "listening") correct(true);
      else if (r.atMs > 0) m.currentTime = r.atMs / 1000;
    }, { once: true });
    if (st.mode === "listening") {
      listenStatus();
      if (st.sync?.playing && $("gate").hidden && !pastEnd()) play();
    } else if (r.play) {
      play();
    }
  }

  // A track that cannot play: said on the page, and a listener tells the
  // server, which moves the station on once every listener has said so.
  function cannotPlay(r, why) {
    st.retry = null;
    clearMessage("retry");
    if (st.track !== r.track) return;
    st.failed = r.track;
    message(`Cannot play ${r.track}: ${why}`, "play");
    if (st.mode === "listening" && st.sync && st.sync.track === r.track) {
      send({ type: "cannot_play", station: st.tuned, track: r.track, reason: why.slice(0, 120) });
      listenStatus();
    }
  }

  $("play").addEventListener("click", togglePlay);
  $("seek").addEventListener("input", (e) => {
    if (st.mode === "listening") return;
    media.currentTime = Number(e.target.value);
  });
  $("volume").addEventListener("input", (e) => {
    media.volume = Number(e.target.value);
    if (media.volume > 0 && media.muted) setMuted(false);
  });
  $("mute").addEventListener("click", () => setMuted(!media.muted));
  $("leave-play").addEventListener("click", () => {
    const id = st.leaveFor;
    $("leave-confirm").hidden = true;
    tuneOut();
    if (id) chooseTrack(id);
  });
  $("leave-stay").addEventListener("click", () => { $("leave-confirm").hidden = true; });
  $("library-search").addEventListener("input", renderLibrary);
  $("live-form").addEventListener("submit", (e) => {
    e.preventDefault();
    goLive($("station-name").value.trim());
  });
  $("stop-live").addEventListener("click", stopLive);
  $("tune-out").addEventListener("click", tuneOut);
  $("copy-link").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("live-link").href);
      message("Link copied.");
    } catch {
      message("Cannot copy here; select the link instead.");
    }
  });
  $("gate-button").addEventListener("click", () => {
    $("gate").hidden = true;
    routeAudio(media);
    if (st.mode === "listening" && st.sync) {
      applySync(st.sync);
    } else if (st.track && st.mode !== "listening") {
      play();
    }
  });
  document.addEventListener("keydown", (e) => {
    const tag = (e.target.tagName || "").toLowerCase();
    const typing = tag === "input" || tag === "textarea";
    if (e.key === "/" && !typing) {
      e.preventDefault();
      $("library-search").focus();
    } else if (e.key === "m" && !typing) {
      setMuted(!media.muted);
    } else if ((e.key === " " || e.key === "k") && !typing && tag !== "button") {
      e.preventDefault();
      togglePlay();
    } else if (e.key === "Escape" && !$("gate").hidden) {
      $("gate").hidden = true;
    }
  });
  window.addEventListener("pagehide", () => saveSession(true));

  setInterval(() => { if (st.connected) send({ type: "list_stations" }); }, STATIONS_EVERY_MS);
  setInterval(() => correct(false), CORRECT_EVERY_MS);

  // For tests and the curious: the player's state at this instant.
  window.radio = {
    state: () => ({
      mode: st.mode,
      track: st.track,
      currentTime: media.currentTime,
      paused: media.paused,
      playbackRate: media.playbackRate,
      station: st.station,
      tuned: st.tuned,
      stationLive: st.stationLive,
      offset: st.offset,
      rtt: st.rtt,
      drift: st.drift,
      connected: st.connected,
      stationPosition: stationPosition(),
      status: $("station-status").textContent,
      message: $("message").hidden ? null : $("message").textContent,
      muted: media.muted,
      volume: media.volume,
      // Even loudness: the track's gain in dB (null: none), and what the
      // GainNode applies (null until the element is routed through it).
      gainDb: loudness.db.get(media) ?? null,
      gain: loudness.nodes.get(media)?.gain.value ?? null,
      audio: loudness.ctx?.state ?? null,
      gate: !$("gate").hidden,
      listeners: $("tuned-listeners").textContent,
      title: $("np-title").textContent,
      artist: $("np-artist").textContent,
      next: st.ready?.next.track ?? null,
      nextShown: $("np-next").hidden ? null : $("np-next").textContent,
      startLead: st.startLead,
      gaps: st.gaps.slice(),
      // A track that failed to load and is retried: how often so far.
      retry: st.retry ? { track: st.retry.track, tries: st.retry.tries, why: st.retry.why ?? null, play: st.retry.play } : null,
      failed: st.failed,
      now: performance.timeOrigin + performance.now(),
    }),
    sync: () => (st.sync ? { ...st.sync } : null),
  };

  // ---------- start ----------
  (async () => {
    await loadLibrary();
    const wanted = new URLSearchParams(location.search).get("station");
    connect();
    if (wanted) tuneIn(wanted);
    else await resumeSession();
  })();
})();
