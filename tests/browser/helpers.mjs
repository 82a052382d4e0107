// What every browser script here shares: a timestamped log, a bounded
// poll, and the page's own account of itself (`window.radio.state()`).

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
