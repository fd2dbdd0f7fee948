// Two small SVG charts, drawn here rather than by a library: a squarified
// treemap (the bytes still to copy, by folder) and a line of throughput
// over time.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c);
  return el;
}

// The worst aspect ratio of a row of areas laid along a side of `side`.
function worst(areas, side) {
  const sum = areas.reduce((a, b) => a + b, 0);
  const max = Math.max(...areas);
  const min = Math.min(...areas);
  const s2 = side * side;
  return Math.max((s2 * max) / (sum * sum), (sum * sum) / (s2 * min));
}

// Squarified layout (Bruls, Huizing, van Wijk): items sorted by value,
// largest first, each given a rectangle whose area is its share.
export function squarify(items, width, height) {
  const total = items.reduce((a, i) => a + i.value, 0);
  const out = [];
  if (total <= 0) return out;
  const scale = (width * height) / total;
  let rest = items.map((item) => ({ item, area: item.value * scale }));
  let x = 0, y = 0, w = width, h = height;
  while (rest.length) {
    const side = Math.min(w, h);
    let n = 1;
    while (
      n < rest.length &&
      worst(rest.slice(0, n + 1).map((r) => r.area), side) <=
        worst(rest.slice(0, n).map((r) => r.area), side)
    ) n++;
    const row = rest.slice(0, n);
    rest = rest.slice(n);
    const rowArea = row.reduce((a, r) => a + r.area, 0);
    if (w >= h) {
      const cw = rowArea / h;
      let cy = y;
      for (const r of row) {
        const rh = r.area / cw;
        out.push({ item: r.item, x, y: cy, w: cw, h: rh });
        cy += rh;
      }
      x += cw;
      w -= cw;
    } else {
      const rh = rowArea / w;
      let cx = x;
      for (const r of row) {
        const rw = r.area / rh;
        out.push({ item: r.item, x: cx, y, w: rw, h: rh });
        cx += rw;
      }
      y += rh;
      h -= rh;
    }
  }
  return out;
}

// A treemap of `items` ({label, value, title, open?}); an item with
// `open` is a link (click, Enter or Space).
export function treemap(items, { width = 960, height = 300, label = "Treemap" } = {}) {
  const shown = items.filter((i) => i.value > 0).sort((a, b) => b.value - a.value);
  const root = svg("svg", {
    class: "treemap",
    viewBox: `0 0 ${width} ${height}`,
    role: "group",
    "aria-label": label,
  });
  if (!shown.length) {
    root.append(svg("text", { x: 12, y: 24, fill: "#5b6475" }, "Nothing to copy here."));
    return root;
  }
  const max = shown[0].value;
  for (const cell of squarify(shown, width, height)) {
    const { item } = cell;
    // Darker for more bytes; one hue, so no colour carries a meaning
    // that a reader without colour vision would miss.
    const light = 62 - 30 * Math.sqrt(item.value / max);
    const g = svg("g", item.open ? { role: "link", tabindex: "0", "aria-label": item.title } : {});
    g.append(
      svg("rect", {
        x: cell.x.toFixed(1), y: cell.y.toFixed(1),
        width: Math.max(cell.w, 0).toFixed(1), height: Math.max(cell.h, 0).toFixed(1),
        fill: `hsl(214 60% ${light.toFixed(0)}%)`,
        "data-path": item.key,
      }),
      svg("title", {}, item.title),
    );
    if (cell.w > 60 && cell.h > 18) {
      const chars = Math.floor((cell.w - 8) / 7);
      const text = item.label.length > chars ? `${item.label.slice(0, chars - 1)}…` : item.label;
      g.append(svg("text", { x: (cell.x + 4).toFixed(1), y: (cell.y + 15).toFixed(1) }, text));
    }
    if (item.open) {
      g.addEventListener("click", item.open);
      g.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          item.open();
        }
      });
    }
    root.append(g);
  }
  return root;
}

// A line chart of samples ({t: seconds, v}) with the largest value and
// the time span written on it.
export function lineChart(samples, { width = 960, height = 200, unit = "", label = "Chart", format = String } = {}) {
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  const pad = { l: 8, r: 8, t: 22, b: 20 };
  root.append(svg("line", { class: "axis", x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }));
  if (samples.length < 2) {
    root.append(svg("text", { x: pad.l, y: 14 }, "Waiting for samples…"));
    return root;
  }
  const t0 = samples[0].t;
  const span = Math.max(samples[samples.length - 1].t - t0, 1);
  const top = Math.max(...samples.map((s) => s.v), 1e-9);
  const px = (t) => pad.l + ((t - t0) / span) * (width - pad.l - pad.r);
  const py = (v) => height - pad.b - (v / top) * (height - pad.t - pad.b);
  const points = samples.map((s) => `${px(s.t).toFixed(1)},${py(s.v).toFixed(1)}`).join(" ");
  root.append(
    svg("polyline", { class: "line", points }),
    svg("text", { x: pad.l, y: 14 }, `peak ${format(top)}${unit}`),
    svg("text", { x: width - pad.r, y: height - 5, "text-anchor": "end" }, `last ${Math.round(span)} s`),
  );
  return root;
}
