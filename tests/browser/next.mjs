// The next track, ready: a page tuned to a station the server runs (7 s
// tracks, so several boundaries pass in the run) fetches each next track
// ahead of the boundary and starts it there on the old one's audio clock.
//
// Measured at each boundary, from the page's two media elements sampled
// every 2 ms (their `currentTime` against the page's clock): the old
// element's clock reaching its end, the new one's clock starting from 0.
// The gap between the two must be under 50 ms (an overlap counts as a
// negative gap, and must be as short). The new track must also start where
// the station's timeline puts the boundary (within the sync tolerance). No
// request for the starting track may come near its boundary: the browser's
// own request log shows each track fetched ahead, and the server's media
// counter matches that log (nothing fetched unseen).
//
// Then a broadcaster's station (the test's own WebSocket): a heartbeat of
// the last track, sent just before its end, that arrives after the page's
// own switch must not take the page back to that track.
//
// usage: node next.mjs SERVER_URL STATION
// Run by tests/it/browser.rs; exits non-zero with a message on the first
// failed expectation.
import { log, until, state, launch } from "./helpers.mjs";

const [base, station] = process.argv.slice(2);
if (!base || !station) {
  console.error("usage: node next.mjs SERVER_URL STATION");
  process.exit(2);
}
const GAP_MS = 50;
const TIMELINE_MS = 250;
const BOUNDARIES = Number(process.env.BOUNDARIES ?? 3);


// The server's count of media requests, whatever their answer (a cached
// track's revalidation is a 304).
async function mediaRequests() {
  const text = await (await fetch(`${base}/metrics`)).text();
  const lines = text.split("\n").filter((l) => l.startsWith('radio_http_requests_total{route="media",'));
  if (!lines.length) throw new Error(`no media request counter in /metrics`);
  return lines.reduce((n, l) => n + Number(l.split(" ").pop()), 0);
}

// The page's samples around one switch, as runs per element: where the old
// element's clock stopped and where the new one's started, both on the
// page's clock (ms).
function boundary(samples, from, to) {
  // Old: the last sample of `from` still advancing, and where it stopped.
  const old = samples.filter((s) => s.track === from);
  const fresh = samples.filter((s) => s.track === to);
  if (!old.length || !fresh.length) throw new Error(`no samples of ${from} then ${to}`);
  const stop = Math.max(...old.map((s) => s.ct));
  const moving = old.filter((s) => !s.paused && s.ct < stop);
  const last = moving[moving.length - 1];
  if (!last) throw new Error(`${from} was never seen playing`);
  const endedAt = last.t + (stop - last.ct) * 1000 / last.rate;
  // New: its clock before it moved, and the first sample after.
  const start = fresh[0].ct;
  const first = fresh.find((s) => s.ct > start && !s.paused);
  if (!first) throw new Error(`${to} was never seen playing`);
  const startedAt = first.t - (first.ct - start) * 1000 / first.rate;
  return { endedAt, startedAt, gap: startedAt - endedAt, start, stop };
}

// A broadcaster's station (the test's own WebSocket, from a page of the
// server's origin) announcing 2.wav after 1.wav: the listener switches on
// its own clock at 1.wav's end, and a heartbeat of 1.wav the broadcaster
// sent just before its end arrives after that switch. The page must not go
// back to 1.wav for it, nor fetch anything, and must take the station's
// update for 2.wav, which it plays already, as it is.
async function lateHeartbeat(context, requests) {
  const late = "late-heartbeat";
  const bc = await context.newPage();
  await bc.goto(`${base}/api/library`);
  await bc.evaluate((url) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    window.__ws = ws;
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error("the broadcaster's WebSocket failed"));
  }), base.replace(/^http/, "ws") + "/ws");
  const say = (msg) => bc.evaluate((m) => window.__ws.send(JSON.stringify(m)), msg);
  await say({ type: "start_broadcasting", station: late });
  await say({ type: "update", station: late, track: "1.wav", position_ms: 2500, playing: true, next: "2.wav" });
  const page = await context.newPage();
  page.on("pageerror", (e) => log("page error:", e.message));
  const from = requests.length;
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith("/media/")) {
      requests.push({ track: decodeURIComponent(u.pathname.slice(7)), method: r.method(), at: Date.now() });
    }
  });
  await page.goto(`${base}/?station=${late}`);
  await until("the late page plays 1.wav", 10000, async () => {
    const s = await state(page);
    return { ok: s.track === "1.wav" && !s.paused && s.currentTime > 0 && s.next === "2.wav", s };
  });
  // Every track the page plays, as it changes (sampled in the page, so no
  // change is missed between two of the test's looks).
  await page.evaluate(() => {
    window.__tracks = [];
    setInterval(() => {
      const t = window.radio.state().track;
      if (window.__tracks[window.__tracks.length - 1] !== t) window.__tracks.push(t);
    }, 5);
  });
  // Its own switch, at 1.wav's end.
  const switched = await until("the late page switches to 2.wav", 8000, async () => {
    const s = await state(page);
    return { ok: s.track === "2.wav", s };
  });
  await say({ type: "heartbeat", station: late, position_ms: 6990, playing: true });
  await new Promise((r) => setTimeout(r, 150));
  await say({ type: "update", station: late, track: "2.wav", position_ms: 150, playing: true, next: "3.wav" });
  await new Promise((r) => setTimeout(r, 1500));
  const tracks = await page.evaluate(() => window.__tracks);
  if (tracks.join(" ") !== "1.wav 2.wav") {
    throw new Error(`a late heartbeat of 1.wav took the page back to it: ${tracks.join(" → ")}`);
  }
  const fetched = requests.slice(from).filter((r) => r.at > switched.s.now - 1000 && r.track !== "3.wav");
  if (fetched.length) {
    throw new Error(`fetched at the boundary: ${fetched.map((r) => r.track).join(", ")}`);
  }
  const s = await state(page);
  if (Math.abs(s.drift ?? 1e9) >= TIMELINE_MS) throw new Error(`2.wav is ${s.drift} ms off the station`);
  log(`a late heartbeat of the last track changed nothing: 2.wav plays, ${Math.round(s.drift)} ms from the station`);
  await page.close();
  await bc.close();
}

let browser;
try {
  browser = await launch("next", { viewport: { width: 1280, height: 800 } });
  const { context } = browser;
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") log("console:", m.text()); });
  // Every media request the page makes, on the page's clock.
  const requests = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (!u.pathname.startsWith("/media/")) return;
    requests.push({ track: decodeURIComponent(u.pathname.slice(7)), method: r.method(), at: Date.now() });
  });
  const countedBefore = await mediaRequests();
  await page.goto(`${base}/?station=${station}`);
  const on = await until("the page plays the station", 15000, async () => {
    const s = await state(page);
    return { ok: !s.paused && s.currentTime > 0.2 && s.status === "live; playing in sync", s };
  });
  log(`playing ${on.s.track}; next announced: ${on.s.nextShown}`);
  if (!/^Next: Tone \d · Next$/.test(on.s.nextShown ?? "")) {
    throw new Error(`the page does not show what plays next: ${JSON.stringify(on.s.nextShown)}`);
  }
  // Both elements, every 2 ms, on the page's clock (ms since its origin,
  // converted to the epoch for the request log).
  await page.evaluate(() => {
    window.__samples = [];
    const origin = performance.timeOrigin;
    setInterval(() => {
      const t = performance.now();
      for (const el of document.querySelectorAll("video")) {
        const src = el.getAttribute("src");
        if (!src) continue;
        window.__samples.push({
          // The track id: the path after /media/, without the `?v=` version.
          t: origin + t, id: el.id, track: decodeURIComponent(new URL(src, location.href).pathname.slice(7)),
          ct: el.currentTime, paused: el.paused, rate: el.playbackRate,
        });
      }
    }, 2);
  });
  // Three boundaries: the tracks the page plays, in turn.
  const played = [on.s.track];
  const stationAt = [];
  while (played.length <= BOUNDARIES) {
    const moved = await until("the page moves to the next track", 12000, async () => {
      const s = await state(page);
      return { ok: s.track !== played[played.length - 1], s };
    });
    played.push(moved.s.track);
    // The station's own sync of the new track: where its timeline starts it.
    const synced = await until("the station's sync of the new track", 3000, async () => {
      const s = await page.evaluate(() => window.radio.sync());
      return { ok: s && s.track === moved.s.track && s.cause !== "next", s };
    });
    const startServer = synced.s.server_time_ms - synced.s.position_ms;
    stationAt.push(startServer - (await state(page)).offset);
  }
  await new Promise((r) => setTimeout(r, 500));
  const samples = await page.evaluate(() => {
    const s = window.__samples;
    window.__samples = [];
    return s;
  });
  const final = await state(page);
  log(`played ${played.join(" → ")}; the page learned a start lead of ${final.startLead.toFixed(1)} ms (its own gaps: ${final.gaps.join(", ")} ms)`);
  // No more requests from here: the page goes.
  await page.close();

  const failures = [];
  for (let i = 0; i < BOUNDARIES; i++) {
    const [from, to] = [played[i], played[i + 1]];
    // Samples between this boundary's neighbours: a track may come again.
    const around = samples.filter((s) => Math.abs(s.t - stationAt[i]) < 3000);
    const b = boundary(around, from, to);
    const offTimeline = b.startedAt - stationAt[i];
    log(`${from} → ${to}: gap ${b.gap.toFixed(1)} ms (old clock stopped at ${b.stop.toFixed(3)} s, new started from ${b.start.toFixed(3)} s); ${offTimeline.toFixed(0)} ms from the station's timeline`);
    if (Math.abs(b.gap) >= GAP_MS) failures.push(`${from} → ${to}: a gap of ${b.gap.toFixed(1)} ms`);
    if (b.start > 0.05) failures.push(`${to} started at ${b.start} s, not at its beginning`);
    if (Math.abs(offTimeline) >= TIMELINE_MS) {
      failures.push(`${to} started ${offTimeline.toFixed(0)} ms from the station's timeline`);
    }
    // The starting track was fetched ahead, and not again near its start.
    const fetched = requests.filter((r) => r.track === to && r.at <= stationAt[i] + 2000);
    const near = fetched.filter((r) => r.at > stationAt[i] - 1000);
    if (!fetched.length) failures.push(`${to} was never fetched before its start`);
    if (near.length) {
      failures.push(`${to} was fetched at its boundary: ${near.map((r) => `${r.method} ${Math.round(r.at - stationAt[i])} ms`).join(", ")}`);
    }
    log(`  ${to} fetched ${fetched.map((r) => `${((r.at - stationAt[i]) / 1000).toFixed(1)} s`).join(", ")} from its start`);
  }
  const counted = (await mediaRequests()) - countedBefore;
  log(`media requests: ${requests.length} in the page's log, ${counted} counted by the server`);
  for (const r of requests) log(`  ${r.method} ${r.track} at ${r.at}`);
  // Every request the server saw is in the page's log; the page may have
  // made more, answered by its own cache (a track's URL names the file's
  // version, and is cached for good), but each track it fetched reached
  // the server once at least.
  const tracksFetched = new Set(requests.map((r) => r.track)).size;
  if (counted > requests.length || counted < tracksFetched) {
    failures.push(`the server counted ${counted} media requests, the page made ${requests.length} for ${tracksFetched} tracks`);
  }
  if (pageErrors.length) failures.push(`script errors in the page: ${pageErrors.join("; ")}`);
  if (failures.length) throw new Error(failures.join("\n"));
  await lateHeartbeat(context, requests);
  log("ok");
} catch (e) {
  console.error("FAILED:", e.message);
  process.exitCode = 1;
} finally {
  await browser?.close();
}
