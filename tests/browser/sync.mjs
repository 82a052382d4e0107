// The web player in a real headless Chromium, against a real radio server:
// page A goes live and plays; page B tunes in with /?station=NAME and must
// play the same moment; A pauses, B pauses; A switches track, B follows;
// A's tab closes, B shows the station offline. Then, on a server without
// --media (DEMO_URL), the demo library plays: a track's time advances.
//
// A listener's page explains itself: "press to listen" until sound plays,
// mute, volume and "leave the station" instead of a disabled pause button,
// the sync figures behind a "Sync details" disclosure, the station's
// listener count and title and artist, a library track played only after
// "leave the station to play this", and on a phone the stations before
// "Go live". Its library search matches across case and accents.
// Screenshots at 1280 px and 390 px.
//
// Then a shell station (RADIO_BIN broadcast) plays the 4 s "Short tone" by
// its title: page E follows it, shows its title and artist, moves to the
// next track within a second of the end, and never starts the ended file
// again, also while a longer station duration keeps it waiting.
//
// Then a shell station whose playlist starts with a track the server does
// not have: page F cannot play it, says so and tells the server
// (`cannot_play`); F being its every listener, the server tells the
// station (`track_failed`), which skips to the next track; F plays that,
// and its "Cannot play" message goes at the track change, not seconds
// later.
//
// usage: node sync.mjs SERVER_URL SCREENSHOT_PATH DEMO_URL RADIO_BIN
// Run by tests/it/browser.rs (so `cargo test` runs it); exits non-zero with
// a message on the first failed expectation.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { log, until, state, launch } from "./helpers.mjs";

const [base, screenshot, demo, radioBin] = process.argv.slice(2);
if (!base || !screenshot || !demo || !radioBin) {
  console.error("usage: node sync.mjs SERVER_URL SCREENSHOT_PATH DEMO_URL RADIO_BIN");
  process.exit(2);
}
const STATION = "browser-test";
const TOLERANCE_MS = 250;


// Both pages' positions at the same instant: sampled concurrently, and B's
// moved to A's sampling instant by the wall-clock gap between the samples.
async function gap(a, b) {
  const [sa, sb] = await Promise.all([state(a), state(b)]);
  const bAtA = sb.currentTime * 1000 - (sb.paused ? 0 : sb.now - sa.now) * sb.playbackRate;
  return { diff: bAtA - sa.currentTime * 1000, a: sa, b: sb };
}

// Samples page `p` every 50 ms until `done(sample)` or `limitMs`; returns
// every sample.
async function watchPage(p, limitMs, done) {
  const samples = [];
  const deadline = Date.now() + limitMs;
  for (;;) {
    const s = await state(p);
    samples.push(s);
    if (done(s)) return samples;
    if (Date.now() > deadline) {
      throw new Error(`not within ${limitMs} ms; last: ${JSON.stringify(s)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Once a page's position passed 3 s on the short track, it never goes back
// (an ended file started again would).
function neverRestarted(samples, what) {
  let max = 0;
  for (const s of samples) {
    if (s.track !== "short.wav") continue;
    max = Math.max(max, s.currentTime);
    if (max > 3 && s.currentTime < max - 0.5) {
      throw new Error(`${what}: the ended track started again (${max.toFixed(2)} s, then ${s.currentTime.toFixed(2)} s)`);
    }
  }
}

async function shellStation(context, watch) {
  const station = "shell-test";
  // Heartbeats every 500 ms: each is a state the page must not take as a
  // cue to play an ended file again.
  const shell = spawn(radioBin, ["broadcast", "--url", base, "--station", station, "--heartbeat-interval", "500ms"], {
    stdio: ["pipe", "ignore", "pipe"],
  });
  let shellErr = "";
  shell.stderr.on("data", (d) => { shellErr += d; });
  try {
    shell.stdin.write('play "short tone"\n');
    const e = await context.newPage();
    watch(e, "E");
    await e.goto(`${base}/?station=${station}`);
    const on = await until("E plays the shell station's short track", 10000, async () => {
      const s = await state(e);
      return { ok: s.track === "short.wav" && !s.paused && s.currentTime > 0.2, s };
    });
    if (on.s.title !== "Short tone" || on.s.artist !== "Browser test") {
      throw new Error(`E shows ${JSON.stringify([on.s.title, on.s.artist])}, not the station's title and artist`);
    }
    // The station's end on the page's clock.
    const endsAt = on.s.now + (4000 - on.s.stationPosition);
    const samples = await watchPage(e, 10000, (s) => s.track !== "short.wav" && !s.paused && s.currentTime > 0);
    neverRestarted(samples, "at the end");
    const moved = samples[samples.length - 1];
    const late = moved.now - endsAt;
    log(`E moved to ${moved.track} ${Math.round(late)} ms after the short track's end`);
    if (late > 1000) throw new Error(`E moved on ${Math.round(late)} ms after the end, not within a second`);

    // The station holds the 4 s file for 6 s: E waits at the end, saying
    // so, and never plays the file again; then it moves on with the station.
    shell.stdin.write('track "short tone" 6\n');
    await until("E plays the short track again from the station's start", 10000, async () => {
      const s = await state(e);
      return { ok: s.track === "short.wav" && !s.paused && s.currentTime < 2, s };
    });
    const waited = await watchPage(e, 12000, (s) => s.track !== "short.wav" && !s.paused);
    neverRestarted(waited, "waiting for the station");
    if (!waited.some((s) => s.track === "short.wav" && /track ended, waiting for the station/.test(s.status))) {
      throw new Error(`E never said it waits for the station: ${JSON.stringify(waited[waited.length - 1])}`);
    }
    log("E waited at the end of the file, then followed the station");
    await e.close();
  } catch (err) {
    throw new Error(`${err.message}\nradio broadcast said: ${shellErr}`);
  } finally {
    shell.stdin.end();
    shell.kill();
  }
}

async function unplayableStation(context, watch) {
  const station = "unplayable-test";
  const dir = mkdtempSync(join(tmpdir(), "radio-playlist-"));
  const list = join(dir, "list.m3u");
  writeFileSync(list, "#EXTM3U\n#EXTINF:60,Not on the server\nmissing.mp3\n#EXTINF:4,Short\nshort.wav\n");
  const shell = spawn(radioBin, [
    "broadcast", "--url", base, "--station", station, "--free-tracks",
    "--playlist", list, "--heartbeat-interval", "500ms",
  ], { stdio: ["pipe", "ignore", "pipe"] });
  let shellErr = "";
  shell.stderr.on("data", (d) => { shellErr += d; });
  try {
    const f = await context.newPage();
    watch(f, "F");
    // Every text the message line shows, recorded in the page: the failure
    // is on screen only until the station moves on, which may be sooner
    // than a poll from here comes round.
    await f.addInitScript(() => {
      window.shownMessages = [];
      document.addEventListener("DOMContentLoaded", () => {
        const m = document.getElementById("message");
        const seen = () => { if (!m.hidden) window.shownMessages.push(m.textContent); };
        new MutationObserver(seen).observe(m, { childList: true, characterData: true, subtree: true, attributes: true });
      });
    });
    await f.goto(`${base}/?station=${station}`);
    const failed = await until("F cannot play the missing track and says so", 10000, async () => {
      const shown = await f.evaluate(() => window.shownMessages);
      return { ok: shown.some((t) => /Cannot play missing\.mp3/.test(t)), shown };
    });
    log("F said:", failed.shown.join(" / "));
    const moved = await until("the station skips to the next track and F plays it", 10000, async () => {
      const s = await state(f);
      return { ok: s.track === "short.wav" && !s.paused && s.currentTime > 0, s };
    });
    if (moved.s.message !== null) {
      throw new Error(`F still shows "${moved.s.message}" while the next track plays`);
    }
    if (!/could not play "missing\.mp3".*skipping to "short\.wav"/.test(shellErr)) {
      throw new Error("radio broadcast did not say why it skipped");
    }
    log("the station skipped the track F could not play; F's message went at the change");
    await f.close();
  } catch (err) {
    throw new Error(`${err.message}\nradio broadcast said: ${shellErr}`);
  } finally {
    shell.stdin.end();
    shell.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

let browser;
try {
  browser = await launch("sync", { viewport: { width: 1280, height: 800 } });
  const { context } = browser;
  const pageErrors = [];
  const watch = (page, name) => {
    page.on("pageerror", (e) => pageErrors.push(`${name}: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") log(`${name} console:`, m.text());
    });
  };

  // --- A goes live and plays the first track ---
  const a = await context.newPage();
  watch(a, "A");
  // A's WebSocket passes through the test, so the test can cut it.
  const aSockets = [];
  await a.routeWebSocket(/\/ws$/, (ws) => {
    ws.connectToServer();
    aSockets.push(ws);
  });
  await a.goto(base + "/");
  await a.waitForSelector("#track-list button[data-id]");
  const ids = await a.$$eval("#track-list button[data-id]", (bs) => bs.map((b) => b.dataset.id));
  if (ids.length < 2) throw new Error(`need two tracks, library has ${JSON.stringify(ids)}`);
  log("library:", ids.join(", "));
  // The search folds case and accents, on both sides.
  for (const q of ["hoppipolla", "SIGUR ROS", "Hoppípolla", "hoppi\u0301polla"]) {
    await a.fill("#library-search", q);
    const found = await a.$$eval("#track-list button[data-id]", (bs) => bs.map((b) => b.dataset.id));
    if (found.length !== 1 || found[0] !== "x/Hoppípolla.wav") {
      throw new Error(`searching ${JSON.stringify(q)} lists ${JSON.stringify(found)}, not x/Hoppípolla.wav`);
    }
  }
  await a.fill("#library-search", "");
  log("the library search matches across case and accents");
  // --- private play resumes from the session after a reload ---
  await a.click(`#track-list button[data-id="${ids[1]}"]`);
  await until("A plays privately", 10000, async () => {
    const s = await state(a);
    return { ok: s.mode === "private" && !s.paused && s.track === ids[1], s };
  });
  await a.evaluate(() => { document.getElementById("media").currentTime = 7; });
  await a.click("#play"); // pause: saves the position
  await until("A paused", 5000, async () => ({ ok: (await state(a)).paused }));
  await until("A's position is saved", 5000, async () => {
    const s = await a.evaluate(() => fetch("/api/session", { cache: "no-store" }).then((r) => r.json()));
    return { ok: s.track === ids[1] && Math.abs(s.position_ms - 7000) < 500, s };
  });
  await a.reload();
  await until("A resumes where it was", 10000, async () => {
    const s = await state(a);
    const note = await a.isVisible("#resume-note");
    return { ok: note && s.track === ids[1] && Math.abs(s.currentTime - 7) < 0.5, s };
  });
  // Keyboard alone: Space plays and pauses.
  await a.focus("body");
  await a.keyboard.press("Space");
  await until("Space plays", 5000, async () => ({ ok: !(await state(a)).paused }));
  await a.keyboard.press("Space");
  await until("Space pauses", 5000, async () => ({ ok: (await state(a)).paused }));
  log("private play resumed after reload at", (await state(a)).currentTime.toFixed(2), "s");

  await a.fill("#station-name", STATION);
  await a.click("#go-live");
  await until("A is live", 10000, async () => {
    const s = await state(a);
    return { ok: s.mode === "live" && s.connected, s };
  });
  await a.click(`#track-list button[data-id="${ids[0]}"]`);
  await until("A plays", 10000, async () => {
    const s = await state(a);
    return { ok: !s.paused && s.currentTime > 0.3 && s.track === ids[0], s };
  });
  log("A is live and playing", ids[0]);

  // --- B tunes in by link and plays the same moment ---
  const b = await context.newPage();
  watch(b, "B");
  await b.goto(`${base}/?station=${STATION}`);
  let streak = 0;
  const synced = await until(`B within ${TOLERANCE_MS} ms of A`, 15000, async () => {
    const g = await gap(a, b);
    const ok = g.b.track === ids[0] && !g.b.paused && Math.abs(g.diff) < TOLERANCE_MS;
    streak = ok ? streak + 1 : 0;
    return { ok: streak >= 3, diff: Math.round(g.diff), b: g.b };
  });
  log(`B in sync: ${synced.diff} ms (offset ${Math.round(synced.b.offset)} ms, drift ${Math.round(synced.b.drift)} ms)`);
  // It stays in sync over a few more seconds.
  const diffs = [];
  for (let i = 0; i < 10; i++) {
    await new Promise((r) => setTimeout(r, 300));
    diffs.push(Math.round((await gap(a, b)).diff));
  }
  log("A-B gaps over 3 s (ms):", diffs.join(" "));
  if (diffs.some((d) => Math.abs(d) >= TOLERANCE_MS)) {
    throw new Error(`B drifted out of sync: ${diffs.join(" ")}`);
  }
  await until("A shows its listener", 10000, async () => {
    const t = await a.textContent("#live-listeners");
    return { ok: t.startsWith("1 listener"), t };
  });

  // --- what B, a listener, sees and can do ---
  for (const hidden of ["#play", "#seek"]) {
    if (await b.isVisible(hidden)) throw new Error(`a listener sees ${hidden}`);
  }
  if ((await b.textContent("#tune-out")).trim() !== "Leave the station") {
    throw new Error(`the leave button says ${await b.textContent("#tune-out")}`);
  }
  await until("B says it plays in sync, with its listener count, title and artist", 10000, async () => {
    const s = await state(b);
    return {
      ok: s.status === "live; playing in sync" && s.listeners.startsWith("1 listener")
        && s.title === "First tone" && s.artist === "Browser test",
      s,
    };
  });
  const recent = async () => ({
    shown: await b.isVisible("#recent"),
    titles: await b.$$eval("#recent-list li .t", (ts) => ts.map((t) => t.textContent)),
  });
  await until("B shows the station's recently played", 5000, async () => {
    const r = await recent();
    return { ok: r.shown && r.titles[0] === "First tone", r };
  });
  await b.click("#mute");
  if (!(await state(b)).muted || (await b.getAttribute("#mute", "aria-pressed")) !== "true") {
    throw new Error("mute did not mute");
  }
  await b.click("#mute");
  if ((await state(b)).muted) throw new Error("mute did not unmute");
  await b.$eval("#volume", (v) => { v.value = "0.4"; v.dispatchEvent(new Event("input")); });
  if (Math.abs((await state(b)).volume - 0.4) > 0.01) throw new Error("the volume did not move");
  await b.$eval("#volume", (v) => { v.value = "1"; v.dispatchEvent(new Event("input")); });
  // The sync figures are behind a disclosure, closed at first.
  if (await b.isVisible("#offset")) throw new Error("the sync details are open from the start");
  await b.click("#sync-details summary");
  await until("the sync details show the clock offset", 5000, async () => {
    const t = await b.textContent("#offset");
    return { ok: (await b.isVisible("#offset")) && / ms$/.test(t), t };
  });
  await b.click("#sync-details summary");
  // A library track while tuned: asked first, and staying changes nothing.
  await b.click(`#track-list button[data-id="${ids[1]}"]`);
  const asked = await b.textContent("#leave-text");
  if (!(await b.isVisible("#leave-confirm")) || !/Leave the station to play “Second tone”/.test(asked)) {
    throw new Error(`no "leave the station to play this" question: ${asked}`);
  }
  await b.click("#leave-stay");
  const stayed = await state(b);
  if (stayed.mode !== "listening" || stayed.tuned !== STATION || stayed.track !== ids[0]) {
    throw new Error(`staying tuned left the station: ${JSON.stringify(stayed)}`);
  }
  log("B: mute, volume, sync details, listener count, title and artist, leave asked");
  mkdirSync(dirname(screenshot), { recursive: true });
  await a.screenshot({ path: screenshot, fullPage: true });
  await b.screenshot({ path: screenshot.replace(/\.png$/, "-listener.png"), fullPage: true });
  // Usable on a phone: nothing wider than a 390 px screen, and listening
  // comes first (the stations above "Go live").
  await b.setViewportSize({ width: 390, height: 844 });
  const overflow = await b.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`the page is ${overflow} px wider than a phone screen`);
  await b.screenshot({ path: screenshot.replace(/\.png$/, "-phone.png"), fullPage: true });
  await b.setViewportSize({ width: 1280, height: 800 });
  await a.setViewportSize({ width: 390, height: 844 });
  const order = await a.evaluate(() => {
    const top = (q) => document.querySelector(q).getBoundingClientRect().top;
    return { now: top(".now"), stations: top(".stations"), golive: top("#live-panel") };
  });
  if (!(order.now < order.stations && order.stations < order.golive)) {
    throw new Error(`on a phone the stations do not come before "Go live": ${JSON.stringify(order)}`);
  }
  await a.setViewportSize({ width: 1280, height: 800 });
  log("screenshots saved:", screenshot);

  // --- C: another browser with the default autoplay rules needs a click ---
  {
    const browserC = await launch("c", { autoplay: false, viewport: { width: 1280, height: 800 } });
    const ctxC = browserC.context;
    try {
      const c = ctxC.pages()[0] ?? (await ctxC.newPage());
      watch(c, "C");
      // Playwright's own evaluations count as user gestures, which would let
      // the page play without the click. So until the step shows, the test
      // does not touch the page: the page reports the step through a binding.
      let gateSeen;
      const gateShown = new Promise((resolve) => { gateSeen = resolve; });
      await c.exposeBinding("__gateShown", (_source, paused) => gateSeen(paused));
      await c.addInitScript(() => {
        document.addEventListener("DOMContentLoaded", () => {
          const g = document.getElementById("gate");
          new MutationObserver(() => {
            if (!g.hidden) window.__gateShown(document.getElementById("media").paused);
          }).observe(g, { attributes: true, attributeFilter: ["hidden"] });
        });
      });
      await c.goto(`${base}/?station=${STATION}`);
      const pausedAtGate = await Promise.race([
        gateShown,
        new Promise((_, reject) => setTimeout(() => reject(new Error("C never showed the click-to-listen step")), 10000)),
      ]);
      if (!pausedAtGate) throw new Error("C played before the click-to-listen step");
      // It waits for the click: nothing plays, and the step stays up.
      await new Promise((r) => setTimeout(r, 1500));
      const waiting = await state(c);
      if (!waiting.paused || !(await c.isVisible("#gate-button"))) {
        throw new Error(`C played or dropped the click-to-listen step without a click: ${JSON.stringify(waiting)}`);
      }
      // Nothing plays yet, and the page says so: no "playing in sync", no drift.
      const told = await until("C says to press to listen", 5000, async () => {
        const s = await state(c);
        const drift = await c.textContent("#drift");
        return { ok: /press/.test(s.status) && drift === "–" && s.gate, status: s.status, drift };
      });
      log("C shows the press-to-listen step and says:", told.status);
      await c.click("#gate-button");
      streak = 0;
      const cs = await until(`C within ${TOLERANCE_MS} ms of A after the click`, 15000, async () => {
        const g = await gap(a, c);
        const ok = !g.b.paused && Math.abs(g.diff) < TOLERANCE_MS;
        streak = ok ? streak + 1 : 0;
        return { ok: streak >= 3, diff: Math.round(g.diff), c: g.b };
      });
      log(`C (another browser) in sync after the click: ${cs.diff} ms`);
      await until("C says it plays in sync once sound runs", 5000, async () => {
        const s = await state(c);
        return { ok: s.status === "live; playing in sync", status: s.status };
      });
    } finally {
      await browserC.close();
    }
  }

  // --- A pauses, B pauses at the same position ---
  await a.click("#play");
  await until("B pauses", 5000, async () => {
    const g = await gap(a, b);
    return { ok: g.a.paused && g.b.paused && Math.abs(g.diff) < TOLERANCE_MS, diff: g.diff, b: g.b };
  });
  log("A paused, B paused");

  // --- A resumes on another track, B follows ---
  await a.click(`#track-list button[data-id="${ids[1]}"]`);
  streak = 0;
  const followed = await until("B follows A to the next track", 15000, async () => {
    const g = await gap(a, b);
    const ok = g.a.track === ids[1] && g.b.track === ids[1] && !g.a.paused && !g.b.paused
      && Math.abs(g.diff) < TOLERANCE_MS;
    streak = ok ? streak + 1 : 0;
    return { ok: streak >= 3, diff: Math.round(g.diff), b: g.b };
  });
  log(`B follows to ${ids[1]}: ${followed.diff} ms`);
  await until("B's recently played has the new track first", 5000, async () => {
    const r = await recent();
    return { ok: r.titles[0] === "Second tone" && r.titles[1] === "First tone", r };
  });

  // --- A's connection drops: it reconnects (backoff with jitter) and
  // resumes its station with its token inside the grace period, so B never
  // sees it go offline and stays in sync ---
  const before = aSockets.length;
  for (const ws of aSockets) await ws.close({ code: 4000, reason: "test cuts the line" });
  let sawOffline = false;
  await until("A reconnects and is live again", 10000, async () => {
    const s = await state(a);
    const t = await b.textContent("#station-status");
    if (/offline/.test(t)) sawOffline = true;
    return { ok: aSockets.length > before && s.connected && s.mode === "live", s };
  });
  if (sawOffline) throw new Error("B saw the station offline while A reconnected");
  streak = 0;
  const resumed = await until("B still in sync after A's reconnect", 10000, async () => {
    const g = await gap(a, b);
    const ok = !g.b.paused && Math.abs(g.diff) < TOLERANCE_MS;
    streak = ok ? streak + 1 : 0;
    return { ok: streak >= 3, diff: Math.round(g.diff) };
  });
  log(`A reconnected and resumed its station; B at ${resumed.diff} ms`);

  // --- A's tab closes; B shows the station offline after the grace period ---
  await a.close();
  await until("B shows the station offline", 15000, async () => {
    const t = await b.textContent("#station-status");
    return { ok: /offline/.test(t), t };
  });
  const after = await state(b);
  if (!after.paused) throw new Error("B still plays after the station went offline");
  log("B shows:", await b.textContent("#station-status"));

  // --- leaving the station to play a library track, once asked ---
  await b.click(`#track-list button[data-id="${ids[1]}"]`);
  await b.click("#leave-play");
  await until("B left the station and plays the track", 10000, async () => {
    const s = await state(b);
    return { ok: s.mode === "private" && s.track === ids[1] && !s.paused, s };
  });
  if (await b.isVisible("#leave-confirm")) throw new Error("the question stays after leaving");
  if (!(await b.isVisible("#play"))) throw new Error("B, no longer a listener, has no play button");
  log("B left the station to play", ids[1]);

  // --- a shell station: by title, to the next track at its end ---
  await shellStation(context, watch);

  // --- a track no listener can play: reported, skipped, message cleared ---
  await unplayableStation(context, watch);

  // --- the demo library of a server without --media plays ---
  const d = await context.newPage();
  watch(d, "demo");
  await d.goto(demo + "/");
  await d.waitForSelector("#track-list button[data-id]");
  const demoIds = await d.$$eval("#track-list button[data-id]", (bs) => bs.map((b) => b.dataset.id));
  if (demoIds.length < 2) throw new Error(`the demo library has ${JSON.stringify(demoIds)}`);
  await d.click(`#track-list button[data-id="${demoIds[0]}"]`);
  const playing = await until("a demo track plays", 10000, async () => {
    const s = await state(d);
    return { ok: !s.paused && s.track === demoIds[0] && s.currentTime > 0, s };
  });
  const from = playing.s.currentTime;
  const advanced = await until("the demo track's time advances", 10000, async () => {
    const s = await state(d);
    return { ok: !s.paused && s.currentTime >= from + 1, s };
  });
  log(`demo library: ${demoIds.length} tracks; ${demoIds[0]} played from ${from.toFixed(2)} to ${advanced.s.currentTime.toFixed(2)} s`);
  await d.close();

  if (pageErrors.length) throw new Error(`script errors in the page: ${pageErrors.join("; ")}`);
  log("ok");
} catch (e) {
  console.error("FAILED:", e.message);
  process.exitCode = 1;
} finally {
  await browser?.close();
}
