// The embeddings tab: the cosine-similarity matrix of a few sentences as a heat map.

import { apiJSON } from "./api.js";
import { $, clearError, linesField, showError, showFigures, usageFigures } from "./ui.js";

export function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / (Math.sqrt(na) * Math.sqrt(nb) || 1);
}

// White (0 or below) to deep blue (1).
function heat(s) {
  const t = Math.max(0, Math.min(1, s));
  return `hsl(215, ${Math.round(20 + 60 * t)}%, ${Math.round(97 - 52 * t)}%)`;
}

function shorten(text, n = 28) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function render(sentences, vectors) {
  const table = document.createElement("table");
  table.className = "heatmap";
  const head = table.createTHead().insertRow();
  head.append(document.createElement("th"));
  sentences.forEach((sentence, j) => {
    const th = document.createElement("th");
    th.textContent = String(j + 1);
    th.title = sentence;
    head.append(th);
  });
  const tbody = table.createTBody();
  sentences.forEach((sentence, i) => {
    const row = tbody.insertRow();
    const th = document.createElement("th");
    th.textContent = `${i + 1}. ${shorten(sentence)}`;
    th.title = sentence;
    row.append(th);
    sentences.forEach((_, j) => {
      const s = cosine(vectors[i], vectors[j]);
      const cell = row.insertCell();
      cell.className = "cell";
      cell.dataset.i = String(i);
      cell.dataset.j = String(j);
      cell.dataset.similarity = s.toFixed(4);
      cell.textContent = s.toFixed(2);
      cell.style.backgroundColor = heat(s);
      if (s > 0.6) cell.classList.add("dark");
      cell.title = `${i + 1} vs ${j + 1}: cosine ${s.toFixed(4)}`;
    });
  });
  return table;
}

async function run(event) {
  event.preventDefault();
  const model = $("embed-model").value;
  const sentences = linesField("embed-input").map((s) => s.trim()).filter(Boolean);
  if (!model) {
    showError(new Error("No embeddings model is served here, or the model list could not be loaded."));
    return;
  }
  if (sentences.length < 2) {
    showError(new Error("Enter at least two sentences, one per line."));
    return;
  }
  clearError();
  $("embed-run").disabled = true;
  const start = performance.now();
  try {
    const result = await apiJSON("/v1/embeddings", { model, input: sentences });
    const vectors = result.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
    $("embed-matrix").replaceChildren(render(sentences, vectors));
    showFigures($("embed-stats"), [
      ["dimensions", "dimensions", vectors[0].length],
      ["time", "time", `${Math.round(performance.now() - start)} ms`],
      ...usageFigures(result.usage),
    ]);
  } catch (error) {
    showError(error);
  } finally {
    $("embed-run").disabled = false;
  }
}

export function initEmbed() {
  $("embed-form").addEventListener("submit", run);
}
