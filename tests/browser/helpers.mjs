// What every browser script here shares: a timestamped log, a bounded
// poll, the page's own account of itself (`window.radio.state()`), and a
// browser to run them in.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const log = (...a) => console.log(new Date().toISOString().slice(11, 23), ...a);

// Polls `fn` every 100 ms until it returns `{ ok: true, ... }`, or throws
// after `limitMs` with the last answer.
export async function until(what, limitMs, fn) {
  const deadline = Date.now() + limitMs;
  let last;
  for (;;) {
    last = await fn();
    if (last && last.ok) return last;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${limitMs} ms; last: ${JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const state = (page) => page.evaluate(() => window.radio.state());

// A headless Chromium (the test's CHROMIUM, else Debian's) on a profile of
// its own, that plays sound without a click unless `autoplay` is false.
// `close()` ends it and removes the profile.
export async function launch(name, { autoplay = true, ...options } = {}) {
  const dir = mkdtempSync(join(tmpdir(), `radio-chromium-${name}-`));
  const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"];
  if (autoplay) args.push("--autoplay-policy=no-user-gesture-required");
  let context;
  try {
    context = await chromium.launchPersistentContext(dir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args,
      ...options,
    });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    context,
    close: async () => {
      await context.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
