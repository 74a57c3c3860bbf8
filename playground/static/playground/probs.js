// The token-probabilities tab: a streamed /v1/completions request with logprobs, each
// generated token coloured by its probability, its top alternatives in a tooltip.

import { apiStream, isAbort } from "./api.js";
import { $, clearError, numberField, showError, showFigures, speedFigures, usageFigures } from "./ui.js";

const TOP = 5;
let controller = null;

// Red (unlikely) through yellow to green (likely).
export function probabilityColour(p) {
  return `hsl(${Math.round(120 * p)}, 75%, 78%)`;
}

function percent(p) {
  return p >= 0.995 ? "100%" : p < 0.001 ? "<0.1%" : `${(100 * p).toFixed(1)}%`;
}

function visible(token) {
  return JSON.stringify(token).slice(1, -1);
}

function tokenSpan(token, logprob, top) {
  const span = document.createElement("span");
  span.className = "token";
  span.textContent = token;
  const p = Math.exp(logprob);
  span.dataset.prob = p.toFixed(4);
  span.style.backgroundColor = probabilityColour(p);
  const alternatives = Object.entries(top || {}).map(([alt, lp]) => [alt, Math.exp(lp)]);
  alternatives.sort((a, b) => b[1] - a[1]);
  span.tooltip = { token, p, alternatives };
  return span;
}

function showTooltip(span) {
  const { token, p, alternatives } = span.tooltip;
  const tip = $("tooltip");
  const head = document.createElement("div");
  head.className = "tip-head";
  head.textContent = `"${visible(token)}"  ${percent(p)}`;
  const table = document.createElement("table");
  for (const [alt, q] of alternatives) {
    const row = table.insertRow();
    if (alt === token) row.className = "chosen";
    const name = row.insertCell();
    name.textContent = `"${visible(alt)}"`;
    const bar = row.insertCell();
    const fill = document.createElement("span");
    fill.className = "bar";
    fill.style.width = `${Math.max(2, Math.round(60 * q))}px`;
    fill.style.backgroundColor = probabilityColour(q);
    bar.append(fill);
    row.insertCell().textContent = percent(q);
  }
  tip.replaceChildren(head, table);
  tip.hidden = false;
  const box = span.getBoundingClientRect();
  tip.style.left = `${Math.min(window.scrollX + box.left, window.scrollX + window.innerWidth - tip.offsetWidth - 8)}px`;
  tip.style.top = `${window.scrollY + box.bottom + 6}px`;
}

async function run(event) {
  event.preventDefault();
  if (controller) return;
  const model = $("probs-model").value;
  if (!model) {
    showError(new Error("No text-generation model is served here, or the model list could not be loaded."));
    return;
  }
  clearError();
  const output = $("probs-output");
  const prompt = $("probs-prompt").value;
  const promptSpan = document.createElement("span");
  promptSpan.className = "prompt";
  promptSpan.textContent = prompt;
  output.replaceChildren(promptSpan);
  output.dataset.state = "streaming";
  const body = { model, prompt, logprobs: TOP, stream: true, stream_options: { include_usage: true } };
  for (const [name, id] of [["temperature", "probs-temperature"], ["max_tokens", "probs-max-tokens"], ["seed", "probs-seed"]]) {
    const value = numberField(id);
    if (value !== undefined) body[name] = value;
  }
  controller = new AbortController();
  $("probs-run").disabled = true;
  $("probs-stop").disabled = false;
  const start = performance.now();
  let first = null;
  let tokens = 0;
  let usage = null;
  let finish = null;
  try {
    await apiStream("/v1/completions", body, controller.signal, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const lp = choice.logprobs;
        if (lp && lp.tokens) {
          lp.tokens.forEach((token, i) => {
            if (first === null) first = performance.now();
            tokens += 1;
            output.append(tokenSpan(token, lp.token_logprobs[i], lp.top_logprobs && lp.top_logprobs[i]));
          });
        } else if (choice.text) {
          output.append(document.createTextNode(choice.text));
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
    output.dataset.state = "done";
  } catch (error) {
    output.dataset.state = isAbort(error) ? "stopped" : "failed";
    if (!isAbort(error)) showError(error);
  } finally {
    controller = null;
    $("probs-run").disabled = false;
    $("probs-stop").disabled = true;
    showFigures($("probs-stats"), [
      ...speedFigures(start, first, performance.now(), usage ? usage.completion_tokens : tokens, Boolean(usage)),
      ...usageFigures(usage),
      ["finish", "finish", finish || output.dataset.state],
    ]);
  }
}

export function initProbs() {
  $("probs-form").addEventListener("submit", run);
  $("probs-stop").addEventListener("click", () => controller && controller.abort());
  const output = $("probs-output");
  output.addEventListener("mouseover", (event) => {
    const span = event.target.closest(".token");
    if (span && span.tooltip) showTooltip(span);
  });
  output.addEventListener("mouseout", (event) => {
    if (event.target.closest(".token")) $("tooltip").hidden = true;
  });
}
