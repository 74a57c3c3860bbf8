// The admin usage page's charts: one stacked bar per UTC day, one colour per key or
// model, drawn as SVG from the JSON the page carries (no library, nothing fetched).
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#417690", "#e07b39", "#5aa469", "#b5485d", "#8c6bb1", "#c9a227", "#3f9fb5", "#7a7a7a"];
  const MAX_SERIES = 7; // the rest is drawn as one "others" series
  const WIDTH = 960, HEIGHT = 260, LEFT = 64, RIGHT = 12, TOP = 12, BOTTOM = 40;

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function grouped(series, metric) {
    const shown = series.slice(0, MAX_SERIES).map((s) => ({ label: s.label, values: s[metric] }));
    const rest = series.slice(MAX_SERIES);
    if (rest.length) {
      const values = rest[0][metric].map((_, day) => rest.reduce((sum, s) => sum + s[metric][day], 0));
      shown.push({ label: `${rest.length} others`, values });
    }
    return shown;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function short(value) {
    if (value >= 1e9) return `${+(value / 1e9).toFixed(2)}G`;
    if (value >= 1e6) return `${+(value / 1e6).toFixed(2)}M`;
    if (value >= 1e3) return `${+(value / 1e3).toFixed(2)}k`;
    return String(value);
  }

  function draw(box, days, series, metric) {
    box.replaceChildren();
    const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img" });
    const title = el("title", {}, `${metric} per day`);
    svg.append(title);
    const shown = grouped(series, metric);
    const totals = days.map((_, day) => shown.reduce((sum, s) => sum + s.values[day], 0));
    const top = niceMax(Math.max(0, ...totals));
    const plotW = WIDTH - LEFT - RIGHT, plotH = HEIGHT - TOP - BOTTOM;
    const slot = plotW / days.length, bar = Math.max(2, slot * 0.7);
    for (let tick = 0; tick <= 4; tick++) {
      const y = TOP + plotH - (plotH * tick) / 4;
      svg.append(el("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: y, y2: y, class: "axis" }));
      svg.append(el("text", { x: LEFT - 6, y: y + 4, "text-anchor": "end" }, short((top * tick) / 4)));
    }
    days.forEach((day, i) => {
      const x = LEFT + i * slot + (slot - bar) / 2;
      let y = TOP + plotH;
      shown.forEach((s, n) => {
        const value = s.values[i];
        if (!value) return;
        const h = (plotH * value) / top;
        y -= h;
        const rect = el("rect", { x, y, width: bar, height: Math.max(h, 0.5), fill: COLOURS[n % COLOURS.length],
                                  "data-day": day, "data-series": s.label, "data-value": value });
        rect.append(el("title", {}, `${day} · ${s.label}: ${value} ${metric}`));
        svg.append(rect);
      });
      if (i % 5 === 0 || i === days.length - 1) {
        svg.append(el("text", { x: x + bar / 2, y: HEIGHT - BOTTOM + 16, "text-anchor": "middle" }, day.slice(5)));
      }
    });
    if (!totals.some((t) => t > 0)) {
      svg.append(el("text", { x: WIDTH / 2, y: TOP + plotH / 2, "text-anchor": "middle", class: "empty" },
                    "No usage in these 30 days"));
    }
    box.append(svg);
    const legend = document.createElement("ul");
    legend.className = "ledger-legend";
    shown.forEach((s, n) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLOURS[n % COLOURS.length];
      const total = s.values.reduce((a, b) => a + b, 0);
      item.append(swatch, `${s.label} (${total} ${metric})`);
      legend.append(item);
    });
    box.append(legend);
  }

  function start() {
    const source = document.getElementById("ledger-usage-data");
    if (!source) return;
    const data = JSON.parse(source.textContent);
    const boxes = document.querySelectorAll(".ledger-chart");
    const buttons = document.querySelectorAll(".ledger-metric");
    function render(metric) {
      boxes.forEach((box) => draw(box, data.days, data[box.dataset.series], metric));
      buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.metric === metric)));
    }
    buttons.forEach((b) => b.addEventListener("click", () => render(b.dataset.metric)));
    render("tokens");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
