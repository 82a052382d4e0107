// A track that fails to load is retried, not reported: in a real headless
// Chromium, through a small HTTP front in this script that stands between
// the page and a real radio server (SERVER_URL, running station STATION
// over 15 s tracks) and passes everything through (the page, the library,
// the WebSocket, the media) but the faults it is told to make.
//
// 1. The first two media requests (whatever their method: the page's
//    fetch and its HEAD asking why) get 503 with Retry-After: 1, as from a
//    server out of descriptors at a track change's herd; the third is cut
//    after 64 KiB. Page A says it is retrying, then plays the station in
//    sync (within 250 ms of the station's position, for two seconds), and
//    the server counted no `cannot_play`.
// 2. Then the front answers every request for the next track a page asks
//    for with 200 and two bytes that are not audio (a damaged file): page
//    B says "Cannot play" and the server counts one `cannot_play`; B plays
//    the station's next track in sync when it comes.
// 3. Page C goes live through the front and plays a track whose fetch
//    the front cuts 3 s in, then answers 503 three times (Chromium asks
//    again by itself before it gives up). Page D, tuned to C's station,
//    must hear C stop mid-track (`playing: false`) and then play on from
//    where it stopped once C has loaded the track again.
//
// B and C each run in a browser of their own: pages of one browser share
// its copies of the media, so a page after another would not ask.
//
// usage: node retry.mjs SERVER_URL STATION
// Run by tests/it/browser.rs; exits non-zero on the first failed
// expectation.
import http from "node:http";
import net from "node:net";
import { log, until, state, launch } from "./helpers.mjs";

const [base, station] = process.argv.slice(2);
if (!base || !station) {
  console.error("usage: node retry.mjs SERVER_URL STATION");
  process.exit(2);
}
const upstream = new URL(base);
const TOLERANCE_MS = 250;

// ---------- the front ----------
const front = {
  busy: 2,          // media requests still to answer 503
  cut: 1,           // media GETs still to cut short
  cutAfter: 64 * 1024, // ... after this many bytes
  thenBusy: 0,      // 503s to answer once a cut is made
  cutDelayMs: 0,    // how long a cut connection is held open first
  junk: false,      // the next media path asked for is answered with junk
  junkPath: null,
  sent503: 0,
  cuts: 0,
  junked: 0,
};

function pass(req, res, cutAfter) {
  const up = http.request({
    host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers,
  }, (ur) => {
    res.writeHead(ur.statusCode, ur.headers);
    if (cutAfter === undefined) { ur.pipe(res); return; }
    let sent = 0;
    ur.on("data", (chunk) => {
      if (sent >= cutAfter) return;
      res.write(chunk);
      sent += chunk.length;
      if (sent >= cutAfter) {
        // Held open for cutDelayMs first: a page plays what it has.
        ur.destroy();
        setTimeout(() => {
          front.cuts++;
          front.busy += front.thenBusy;
          front.thenBusy = 0;
          log(`front: cut ${req.method} ${req.url} after ${sent} bytes`);
          res.socket?.destroy();
        }, front.cutDelayMs);
      }
    });
    ur.on("end", () => { if (sent < cutAfter) res.end(); });
  });
  up.on("error", () => res.socket?.destroy());
  req.pipe(up);
}

const server = http.createServer((req, res) => {
  const path = req.url.split("?")[0];
  if (!path.startsWith("/media/")) return pass(req, res);
  if (front.junk && front.junkPath === null) front.junkPath = path;
  if (path === front.junkPath) {
    front.junked++;
    log(`front: junk for ${req.method} ${req.url}`);
    res.writeHead(200, { "content-type": "audio/wav", "content-length": "2", "accept-ranges": "none" });
    res.end(req.method === "HEAD" ? undefined : "x\n");
    return;
  }
  if (front.busy > 0) {
    front.busy--;
    front.sent503++;
    log(`front: 503 for ${req.method} ${req.url}`);
    res.writeHead(503, { "retry-after": "1", "content-type": "text/plain", connection: "close" });
    res.end("busy\n");
    return;
  }
  if (front.cut > 0 && req.method === "GET") {
    front.cut--;
    return pass(req, res, front.cutAfter);
  }
  pass(req, res);
});
// The WebSocket: its bytes as they are, both ways.
server.on("upgrade", (req, socket, head) => {
  const up = net.connect(Number(upstream.port), upstream.hostname, () => {
    let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
    up.write(lines + "\r\n");
    if (head.length) up.write(head);
    socket.pipe(up);
    up.pipe(socket);
  });
  up.on("error", () => socket.destroy());
  socket.on("error", () => up.destroy());
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const frontUrl = `http://127.0.0.1:${server.address().port}`;

// ---------- checks ----------
async function cannotPlayCount() {
  const text = await (await fetch(base + "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith("radio_cannot_play_total "));
  if (!line) throw new Error("no radio_cannot_play_total in /metrics");
  return Number(line.split(" ")[1]);
}

// Every text the message and the station's status line show, recorded in
// the page (a retry may come and go between two polls from here).
const recordShown = () => {
  window.shown = [];
  document.addEventListener("DOMContentLoaded", () => {
    for (const id of ["message", "station-status"]) {
      const m = document.getElementById(id);
      const seen = () => { if (!m.hidden) window.shown.push(m.textContent); };
      new MutationObserver(seen).observe(m, { childList: true, characterData: true, subtree: true, attributes: true });
    }
  });
};

// Page `p` plays the station's track within TOLERANCE_MS of its position,
// at every sample for `forMs`.
async function inSync(p, what, forMs) {
  const first = await until(`${what} plays the station in sync`, 30_000, async () => {
    const [s, sync] = await Promise.all([state(p), p.evaluate(() => window.radio.sync())]);
    const drift = s.currentTime * 1000 - s.stationPosition;
    return { ok: sync && s.track === sync.track && !s.paused && Math.abs(drift) < TOLERANCE_MS, drift, s };
  });
  const end = Date.now() + forMs;
  while (Date.now() < end) {
    const s = await state(p);
    const drift = s.currentTime * 1000 - s.stationPosition;
    if (s.track !== first.s.track) break; // the station moved on: a new start
    if (s.paused || Math.abs(drift) > TOLERANCE_MS) {
      throw new Error(`${what} left sync: drift ${Math.round(drift)} ms, ${JSON.stringify(s)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return first.s;
}

let browser;
const others = [];
try {
  browser = await launch("retry");
  const { context } = browser;
  const pageErrors = [];

  // --- 1: 503, 503, a cut; then in sync, and nothing reported ---
  const a = await context.newPage();
  a.on("pageerror", (e) => pageErrors.push(`A: ${e.message}`));
  await a.addInitScript(recordShown);
  await a.goto(`${frontUrl}/?station=${encodeURIComponent(station)}`);
  const played = await inSync(a, "A, after 503s and a cut", 2000);
  const shownA = await a.evaluate(() => window.shown);
  log(`A plays ${played.track} in sync; it said: ${[...new Set(shownA)].join(" / ")}`);
  if (front.sent503 !== 2) throw new Error(`the front sent ${front.sent503} 503s, not 2`);
  if (!shownA.some((t) => /retrying/.test(t))) throw new Error("A never said it was retrying");
  if (shownA.some((t) => /Cannot play/.test(t))) throw new Error("A said it cannot play a track it could");
  if (played.failed !== null) throw new Error(`A took ${played.failed} for unplayable`);
  const afterRetries = await cannotPlayCount();
  if (afterRetries !== 0) throw new Error(`the server counted ${afterRetries} cannot_play after transient failures`);
  log(`front: ${front.sent503} x 503, ${front.cuts} cut; server: 0 cannot_play`);
  await a.close();

  // --- 2: a file that is not audio still cannot play ---
  front.junk = true;
  // A browser of its own: one that played the station's tracks already
  // would play B's from its copy, never asking the front.
  others.push(await launch("retry-b"));
  const b = await others.at(-1).context.newPage();
  b.on("pageerror", (e) => pageErrors.push(`B: ${e.message}`));
  await b.addInitScript(recordShown);
  await b.goto(`${frontUrl}/?station=${encodeURIComponent(station)}`);
  const said = await until("B says it cannot play the damaged file", 15_000, async () => {
    const shown = await b.evaluate(() => window.shown);
    return { ok: front.junkPath !== null && shown.some((t) => /Cannot play/.test(t)), shown };
  });
  log(`B (junk for ${front.junkPath}) said: ${[...new Set(said.shown)].join(" / ")}`);
  await until("the server counts B's cannot_play", 5000, async () => {
    const n = await cannotPlayCount();
    return { ok: n === 1, n };
  });
  const next = await inSync(b, "B, on the station's next track", 1000);
  if (front.junkPath === `/media/${next.track}`) {
    throw new Error(`B plays the damaged ${next.track}`);
  }
  log(`B plays ${next.track} in sync`);
  if (front.junked < 2) throw new Error(`B asked for the damaged file ${front.junked} times: it never checked it`);
  await b.close();

  // --- 3: a live page whose track is cut mid-play tells its listeners ---
  front.junk = false;
  front.junkPath = null;
  front.cut = 1;
  front.cutAfter = 256 * 1024; // of a 15 s tone of 650 KB: about 6 s in
  front.cutDelayMs = 3000;     // cut while C plays, 3 s in
  // Chromium fetches a cut file again by itself; these make it give up.
  front.thenBusy = 3;
  others.push(await launch("retry-c"));
  const c = await others.at(-1).context.newPage();
  c.on("pageerror", (e) => pageErrors.push(`C: ${e.message}`));
  await c.goto(frontUrl + "/");
  const library = await (await fetch(base + "/api/library")).json();
  const track = library[0].id;
  await c.waitForSelector(`#track-list button[data-id="${track}"]`);
  await c.fill("#station-name", "cutlive");
  await c.click("#go-live");
  await until("C is live", 10_000, async () => {
    const s = await state(c);
    return { ok: s.mode === "live" && s.connected, s };
  });
  // D listens before C plays, so that it hears all that follows.
  const d = await context.newPage();
  d.on("pageerror", (e) => pageErrors.push(`D: ${e.message}`));
  await d.goto(`${base}/?station=cutlive`);
  const syncOf = async () => (await d.evaluate(() => window.radio.sync())) ?? {};
  await until("D is tuned", 10_000, async () => ({ ok: (await state(d)).tuned === "cutlive" }));
  await c.click(`#track-list button[data-id="${track}"]`);
  await until("D hears C play", 15_000, async () => {
    const s = await syncOf();
    return { ok: s.track === track && s.playing === true, s };
  });
  log("C plays", track, "live; its fetch is cut after", front.cutAfter, "bytes, 3 s in");
  // Mid-track: a track change also says "not playing" for a moment, at 0.
  const stalled = await until("D hears C stop mid-track while C reloads", 40_000, async () => {
    const s = await syncOf();
    const ok = s.track === track && s.playing === false && s.position_ms >= 1000 &&
      s.position_ms < s.duration_ms - 1000;
    return { ok, s, c: (await state(c)).retry };
  });
  log(`D: C not playing ${stalled.s.track} at ${stalled.s.position_ms} ms (C's retry: ${JSON.stringify(stalled.c)})`);
  if (!stalled.c) throw new Error("C stopped without a failed fetch to retry");
  await until("D hears C play again", 30_000, async () => {
    const s = await syncOf();
    return {
      ok: s.track === stalled.s.track && s.playing === true && s.position_ms >= stalled.s.position_ms, s,
      c: await state(c),
    };
  });
  log("C plays again after reloading");

  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
  log("ok");
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  server.close();
  server.closeAllConnections?.();
  await browser?.close();
  for (const o of others) await o.close();
}
