// Even loudness in the web player, in a real headless Chromium against a
// real radio server whose library has a loud and a quiet track, measured
// by the server (each /api/library entry's `gain_db`), and a station the
// server runs over them (STATION).
//
// A listener tuned to the station plays each track through a Web Audio
// GainNode set to that track's gain (linear 10^(dB/20)); a page playing
// the library on its own applies the library's gain to the track chosen.
// The GainNode's own `gain.value` is read in the page.
//
// usage: node gain.mjs SERVER_URL STATION
// Run by tests/it/loudness.rs; exits non-zero on the first failed
// expectation.
import { log, until, state, launch } from "./helpers.mjs";

const [base, station] = process.argv.slice(2);
if (!base || !station) {
  console.error("usage: node gain.mjs SERVER_URL STATION");
  process.exit(2);
}
const linear = (db) => Math.pow(10, db / 20);

// Whether page `p` plays `track` through a GainNode at `db`.
async function playsAt(p, track, db) {
  const s = await state(p);
  const ok = s.track === track && !s.paused && s.audio === "running" &&
    s.gainDb === db && s.gain !== null && Math.abs(s.gain - linear(db)) < 1e-3;
  return { ok, track: s.track, paused: s.paused, audio: s.audio, gainDb: s.gainDb, gain: s.gain };
}

let browser;
try {
  browser = await launch("gain");
  const { context } = browser;
  const pageErrors = [];
  const library = await (await fetch(base + "/api/library")).json();
  const gains = new Map(library.map((t) => [t.id, t.gain_db]));
  log("library gains:", JSON.stringify([...gains]));
  const measured = library.filter((t) => typeof t.gain_db === "number");
  if (measured.length < 2) throw new Error(`need two measured tracks: ${JSON.stringify(library)}`);
  const [loud, quiet] = [...measured].sort((a, b) => a.gain_db - b.gain_db);
  if (quiet.gain_db - loud.gain_db < 6) throw new Error("the tracks' gains should differ");

  // --- a listener: each track of the station at its own gain ---
  const l = await context.newPage();
  l.on("pageerror", (e) => pageErrors.push(`L: ${e.message}`));
  await l.goto(`${base}/?station=${encodeURIComponent(station)}`);
  for (const t of [loud, quiet]) {
    const seen = await until(`the listener plays ${t.id} at ${t.gain_db} dB`, 30_000, () =>
      playsAt(l, t.id, t.gain_db));
    log(`listener: ${t.id} at ${t.gain_db} dB, GainNode ${seen.gain}`);
  }
  await l.close();

  // --- the library on its own: the chosen track at the library's gain ---
  const p = await context.newPage();
  p.on("pageerror", (e) => pageErrors.push(`P: ${e.message}`));
  await p.goto(base + "/");
  await p.waitForSelector(`#track-list button[data-id="${quiet.id}"]`);
  await p.click(`#track-list button[data-id="${quiet.id}"]`);
  const seen = await until(`private play of ${quiet.id} at ${quiet.gain_db} dB`, 15_000, () =>
    playsAt(p, quiet.id, quiet.gain_db));
  log(`private: ${quiet.id} at ${quiet.gain_db} dB, GainNode ${seen.gain}`);
  // Sound still comes through: the element's time advances while routed.
  const t0 = (await state(p)).currentTime;
  await new Promise((r) => setTimeout(r, 700));
  const t1 = (await state(p)).currentTime;
  if (!(t1 > t0 + 0.3)) throw new Error(`the routed element does not play: ${t0} -> ${t1}`);

  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
  log("ok");
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser?.close();
}
