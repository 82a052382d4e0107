// A station broadcast from the web page ("Go live") moves on from a track
// none of its listeners can play, as `radio broadcast` and a station the
// server runs do: in a real headless Chromium against a real radio server
// whose library holds three playable tones.
//
// Page A goes live on STATION and plays the library's first track. Page
// B tunes in, but every byte it is given of that first track is two bytes
// that are not audio (a damaged copy between it and the server, made by
// Playwright's routing), so B says "Cannot play" and tells the server,
// which tells A (`track_failed`: every listener failed). A says why, skips
// to the second track, and B plays that one in step with A.
//
// usage: node golive.mjs SERVER_URL STATION
// Run by tests/it/browser.rs; exits non-zero on the first failed
// expectation.
import { log, until, state, launch } from "./helpers.mjs";

const [base, station] = process.argv.slice(2);
if (!base || !station) {
  console.error("usage: node golive.mjs SERVER_URL STATION");
  process.exit(2);
}

let browser;
try {
  browser = await launch("golive");
  const { context } = browser;
  const pageErrors = [];
  const library = await (await fetch(base + "/api/library")).json();
  if (library.length < 3) throw new Error(`need three tracks: ${JSON.stringify(library)}`);
  const [first, second] = library;

  // --- A goes live and plays the first track ---
  const a = await context.newPage();
  a.on("pageerror", (e) => pageErrors.push(`A: ${e.message}`));
  await a.goto(base + "/");
  await a.waitForSelector(`#track-list button[data-id="${first.id}"]`);
  await a.fill("#station-name", station);
  await a.click("#go-live");
  await until("A is live", 10_000, async () => {
    const s = await state(a);
    return { ok: s.mode === "live" && s.connected, s };
  });
  await a.click(`#track-list button[data-id="${first.id}"]`);
  await until("A plays the first track", 10_000, async () => {
    const s = await state(a);
    return { ok: !s.paused && s.currentTime > 0.3 && s.track === first.id, track: s.track };
  });
  log("A is live, playing", first.id);

  // --- B can play everything but the first track ---
  const b = await context.newPage();
  b.on("pageerror", (e) => pageErrors.push(`B: ${e.message}`));
  let damaged = 0;
  await b.route(
    (url) => url.pathname.startsWith("/media/") &&
      decodeURIComponent(url.pathname.slice("/media/".length)) === first.id,
    (route) => {
      damaged++;
      return route.fulfill({ status: 200, contentType: "audio/wav", body: "no" });
    },
  );
  await b.goto(`${base}/?station=${encodeURIComponent(station)}`);
  const failedAt = await until("B cannot play the first track", 15_000, async () => {
    const s = await state(b);
    return { ok: s.failed === first.id, failed: s.failed, message: s.message, damaged };
  });
  log("B failed", failedAt.failed, "after", damaged, "damaged answer(s):", failedAt.message);

  // --- A moves on, and says why; B plays the second track with A ---
  const skipped = await until("A skips to the second track", 15_000, async () => {
    const s = await state(a);
    return { ok: s.track === second.id && !s.paused, track: s.track, message: s.message };
  });
  log("A:", skipped.message);
  if (!skipped.message || !skipped.message.includes("could not play") ||
      !skipped.message.includes(second.title)) {
    throw new Error(`A should say why it skipped and to what: ${JSON.stringify(skipped)}`);
  }
  await until("B plays the second track with A", 15_000, async () => {
    const [sa, sb] = [await state(a), await state(b)];
    const diff = (sb.currentTime - sa.currentTime) * 1000;
    return {
      ok: sb.track === second.id && !sb.paused && Math.abs(diff) < 500,
      track: sb.track, diff: Math.round(diff), failed: sb.failed,
    };
  });
  log("B plays", second.id, "in step with A");
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
  log("ok");
} finally {
  await browser?.close();
}
