// Renders contrib/grafana/radio.json's panels from a real Prometheus's
// query results, in headless Chromium, to a PNG: the dashboard's picture
// where Grafana itself cannot run (it is in neither Debian nor PyPI nor npm).
// Each panel's PromQL is run as Grafana would run it (query_range over the
// time range, $__rate_interval and the variables filled in), its series
// named by its legendFormat, and drawn in the panel's grid position: time
// series as lines, stats as their last value. Run by bench/dashboard.sh:
//
//   node bench/dashboard.mjs PROMETHEUS_URL START END OUT.png
//
// START and END are Unix seconds.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../tests/browser/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const [prom, start, end, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node bench/dashboard.mjs PROMETHEUS_URL START END OUT.png');
  process.exit(2);
}
const dash = JSON.parse(readFileSync(new URL('../contrib/grafana/radio.json', import.meta.url)));
const span = Number(end) - Number(start);
// Grafana's step for ~1,000 px wide panels, and its $__rate_interval: four
// scrape intervals (1 s here) or the step plus one, whichever is longer.
const step = Math.max(1, Math.round(span / 400));
const rateInterval = `${Math.max(4, step + 1)}s`;

function fill(expr) {
  return expr
    .replaceAll('$__rate_interval', rateInterval)
    .replaceAll('$job', '.*')
    .replaceAll('$instance', '.*');
}

async function queryRange(expr) {
  const q = new URLSearchParams({ query: fill(expr), start, end, step: String(step) });
  const res = await fetch(`${prom}/api/v1/query_range?${q}`);
  const body = await res.json();
  if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
  return body.data.result;
}

const legend = (format, labels, fallback) =>
  format ? format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k) => labels[k] ?? '') : fallback;

const panels = [];
for (const p of dash.panels) {
  const series = [];
  for (const t of p.targets) {
    for (const r of await queryRange(t.expr)) {
      series.push({
        name: legend(t.legendFormat, r.metric, p.title),
        points: r.values.map(([ts, v]) => [Number(ts), Number(v)]),
      });
    }
  }
  series.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
  panels.push({
    title: p.title,
    type: p.type,
    grid: p.gridPos,
    unit: p.fieldConfig?.defaults?.unit ?? 'short',
    mappings: p.fieldConfig?.defaults?.mappings ?? [],
    series,
  });
}

const page = `<!doctype html><meta charset="utf-8"><style>
  body { margin: 0; background: #111217; color: #ccccdc; font: 13px Inter, 'DejaVu Sans', sans-serif; }
  header { display: flex; align-items: baseline; gap: 16px; padding: 12px 16px; }
  header h1 { font-size: 18px; font-weight: 500; margin: 0; color: #fff; }
  header span { color: #8e8e9e; }
  #grid { position: relative; margin: 0 16px 16px; }
  .panel { position: absolute; box-sizing: border-box; background: #181b1f;
           border: 1px solid #2c3235; border-radius: 2px; padding: 6px 8px; overflow: hidden; }
  .panel h2 { font-size: 13px; font-weight: 500; margin: 0 0 4px; color: #ccccdc; }
  .stat { font-size: 34px; font-weight: 500; text-align: center; margin-top: 18px; }
  .legend { display: flex; flex-wrap: wrap; gap: 2px 14px; font-size: 11px; }
  .legend i { display: inline-block; width: 14px; height: 4px; margin-right: 5px; vertical-align: middle; }
  .empty { color: #8e8e9e; text-align: center; margin-top: 30px; }
  footer { color: #8e8e9e; font-size: 11px; padding: 0 16px 12px; }
  svg text { fill: #8e8e9e; font-size: 10px; }
</style>
<header><h1>radio</h1><span id="range"></span></header>
<div id="grid"></div>
<footer>Panels of contrib/grafana/radio.json drawn by bench/dashboard.mjs from Prometheus query_range results
(Grafana does not run on this machine); data: a real Prometheus scraping two radio serve nodes under radio loadtest.</footer>
<script>
const panels = ${JSON.stringify(panels)};
const start = ${Number(start)}, end = ${Number(end)};
const palette = ['#73bf69', '#f2cc0c', '#8ab8ff', '#ff780a', '#f2495c', '#5794f2', '#b877d9', '#fade2a', '#37872d', '#e0b400'];
const W = 1568 / 24, H = 30, GAP = 8;
function fmt(v, unit) {
  if (!isFinite(v)) return '–';
  const scaled = (v, steps, names) => {
    let i = 0;
    while (Math.abs(v) >= steps && i < names.length - 1) { v /= steps; i++; }
    const text = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
    return text.replace(/(\\.\\d*?)0+$/, '$1').replace(/\\.$/, '') + names[i];
  };
  switch (unit) {
    case 'bytes': return scaled(v, 1024, [' B', ' KiB', ' MiB', ' GiB']);
    case 's': return v === 0 ? '0 s' : v < 1e-3 ? (v * 1e6).toFixed(0) + ' µs' : v < 1 ? (v * 1e3).toFixed(v < 0.01 ? 2 : 1) + ' ms' : v.toFixed(2) + ' s';
    case 'percentunit': return (v * 100).toFixed(v < 0.1 ? 1 : 0) + '%';
    case 'reqps': return scaled(v, 1000, [' req/s', 'K req/s']);
    default: return scaled(v, 1000, ['', 'K', 'M', 'G']);
  }
}
const clock = t => new Date(t * 1000).toISOString().slice(11, 19);
document.getElementById('range').textContent =
  new Date(start * 1000).toISOString().slice(0, 10) + '  ' + clock(start) + ' – ' + clock(end) + ' UTC';
const grid = document.getElementById('grid');
let bottom = 0;
for (const p of panels) {
  const el = document.createElement('div');
  el.className = 'panel';
  const x = p.grid.x * W, y = p.grid.y * (H + GAP / 2), w = p.grid.w * W - GAP, h = p.grid.h * (H + GAP / 2) - GAP;
  Object.assign(el.style, { left: x + 'px', top: y + 'px', width: w + 'px', height: h + 'px' });
  bottom = Math.max(bottom, y + h);
  el.innerHTML = '<h2></h2>';
  el.querySelector('h2').textContent = p.title;
  grid.appendChild(el);
  if (!p.series.length) {
    el.insertAdjacentHTML('beforeend', '<div class="empty">No data</div>');
    continue;
  }
  if (p.type === 'stat') {
    const pts = p.series[0].points;
    const last = pts[pts.length - 1][1];
    const mapped = p.mappings.map(m => m.options?.[String(last)]).find(Boolean);
    const div = document.createElement('div');
    div.className = 'stat';
    div.textContent = mapped ? mapped.text : fmt(last, p.unit);
    div.style.color = mapped ? (mapped.color === 'red' ? '#f2495c' : '#73bf69') : '#73bf69';
    el.appendChild(div);
    continue;
  }
  const legendH = 16 * Math.ceil(p.series.length / 4);
  const cw = w - 16, ch = h - 28 - legendH, left = 58, bottomPad = 18;
  const all = p.series.flatMap(s => s.points.map(q => q[1])).filter(isFinite);
  let lo = Math.min(0, ...all), hi = Math.max(...all);
  if (hi <= lo) hi = lo + 1;
  hi *= 1.08;
  const X = t => left + (t - start) / (end - start) * (cw - left - 4);
  const Y = v => (ch - bottomPad) - (v - lo) / (hi - lo) * (ch - bottomPad - 6);
  let svg = '<svg width="' + cw + '" height="' + ch + '">';
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4, yy = Y(v);
    svg += '<line x1="' + left + '" x2="' + (cw - 4) + '" y1="' + yy + '" y2="' + yy + '" stroke="#2c3235"/>';
    svg += '<text x="' + (left - 6) + '" y="' + (yy + 3) + '" text-anchor="end">' + fmt(v, p.unit) + '</text>';
  }
  for (let i = 0; i <= 5; i++) {
    const t = start + (end - start) * i / 5;
    svg += '<text x="' + X(t) + '" y="' + (ch - 4) + '" text-anchor="' + (i === 5 ? 'end' : i === 0 ? 'start' : 'middle') + '">' + clock(t).slice(0, 5 + (end - start < 600 ? 3 : 0)) + '</text>';
  }
  p.series.forEach((s, i) => {
    const color = palette[i % palette.length];
    // A gap in the data (no sample for 3 steps) breaks the line, as in Grafana.
    let d = '', prev = null;
    for (const [t, v] of s.points) {
      if (!isFinite(v)) { prev = null; continue; }
      d += (prev === null || t - prev > ${3 * step} ? 'M' : 'L') + X(t).toFixed(1) + ',' + Y(v).toFixed(1);
      prev = t;
    }
    svg += '<path d="' + d + '" fill="none" stroke="' + color + '" stroke-width="1.6"/>';
  });
  svg += '</svg>';
  el.insertAdjacentHTML('beforeend', svg);
  const lg = document.createElement('div');
  lg.className = 'legend';
  p.series.forEach((s, i) => {
    const span = document.createElement('span');
    span.innerHTML = '<i style="background:' + palette[i % palette.length] + '"></i>';
    span.appendChild(document.createTextNode(s.name));
    lg.appendChild(span);
  });
  el.appendChild(lg);
}
grid.style.height = bottom + 'px';
</script>`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
});
try {
  const tab = await browser.newPage({ viewport: { width: 1600, height: 900 } });
  await tab.setContent(page);
  await tab.screenshot({ path: out, fullPage: true });
} finally {
  await browser.close();
}
console.log(`dashboard: ${panels.length} panels from ${prom} written to ${out}`);
