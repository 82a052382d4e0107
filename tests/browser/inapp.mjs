// "Listen in your app": a page tuned to a station shows the station's
// stream URL (absolute, to copy into any radio app) and its .m3u playlist;
// the playlist it links answers with that stream URL, and the stream with
// MP3 audio; tuned to another station, the links follow.
//
// usage: node inapp.mjs SERVER_URL STATION OTHER_STATION
// Run by tests/it/browser.rs; exits non-zero with a message on the first
// failed expectation.
import { log, until, launch } from "./helpers.mjs";

const [base, station, other] = process.argv.slice(2);
if (!base || !station || !other) {
  console.error("usage: node inapp.mjs SERVER_URL STATION OTHER_STATION");
  process.exit(2);
}

const browser = await launch("inapp", { autoplay: false, viewport: { width: 1280, height: 800 } });
const { context } = browser;
try {
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));

  // The links of the station the page is tuned to.
  const links = () => page.evaluate(() => ({
    visible: !document.getElementById("tuned-panel").hidden,
    text: document.getElementById("in-app").innerText,
    stream: document.getElementById("stream-link").href,
    shown: document.getElementById("stream-link").textContent,
    m3u: document.getElementById("m3u-link").href,
  }));

  const check = async (name) => {
    const want = `${base}/stations/${name}/stream`;
    const got = await until(`the page shows ${name}'s stream`, 20000, async () => {
      const l = await links();
      return { ok: l.visible && l.stream === want, ...l };
    });
    if (!got.text.startsWith("Listen in your app")) throw new Error(`the link is not offered: ${got.text}`);
    if (got.shown !== want) throw new Error(`the page shows ${got.shown}, not ${want}`);
    if (got.m3u !== `${want}.m3u`) throw new Error(`the playlist link is ${got.m3u}`);
    // The playlist, fetched as the link's user would: it names the stream.
    const playlist = await page.evaluate(async (u) => {
      const r = await fetch(u);
      return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
    }, got.m3u);
    if (playlist.status !== 200 || playlist.type !== "audio/x-mpegurl") {
      throw new Error(`the playlist answered ${playlist.status} ${playlist.type}`);
    }
    if (!playlist.body.split("\n").includes(want)) {
      throw new Error(`the playlist does not name ${want}: ${playlist.body}`);
    }
    // The stream itself: MP3, and audio comes.
    const stream = await page.evaluate(async (u) => {
      const ctl = new AbortController();
      const r = await fetch(u, { signal: ctl.signal });
      const { value } = await r.body.getReader().read();
      ctl.abort();
      return { status: r.status, type: r.headers.get("content-type"), bytes: value?.length ?? 0 };
    }, want);
    if (stream.status !== 200 || stream.type !== "audio/mpeg" || stream.bytes === 0) {
      throw new Error(`the stream answered ${JSON.stringify(stream)}`);
    }
    log(`${name}: ${got.shown} (${stream.type}) and its playlist`);
  };

  await page.goto(`${base}/?station=${station}`);
  await check(station);
  // Another station, tuned from the page's list: the links follow.
  // (Clicked from the page itself: the list is redrawn at every listing,
  // and a redrawn button is a new element.)
  await until(`${other} is in the page's list`, 20000, async () => ({
    ok: await page.evaluate((name) => {
      const b = document.querySelector(`#station-list button[data-station="${name}"]`);
      if (b) b.click();
      return !!b;
    }, other),
  }));
  await check(other);
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
  log("ok");
} finally {
  await browser.close();
}
