// Small page helpers shared by the tabs: element lookup, form fields, the error banner,
// the figures line under an answer.

export const $ = (id) => document.getElementById(id);

export function numberField(id) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  return Number.isFinite(value) ? value : undefined;
}

export function linesField(id) {
  return $(id)
    .value.split("\n")
    .filter((line) => line.length > 0);
}

// Shows an API error with its OpenAI message (or any other failure's message).
export function showError(error) {
  const what = error.status ? `API error ${error.status}${error.code ? ` ${error.code}` : ""}` : "Error";
  $("error-status").textContent = `${what}:`;
  $("error-message").textContent = error.message || String(error);
  $("error").hidden = false;
  document.dispatchEvent(new CustomEvent("playground:error", { detail: error }));
}

export function clearError() {
  $("error").hidden = true;
}

// "label value" pairs written as <span><b>label</b> value</span>, so each figure can be read.
export function showFigures(target, figures) {
  target.replaceChildren(
    ...figures.map(([name, label, value]) => {
      const span = document.createElement("span");
      span.dataset.figure = name;
      const b = document.createElement("b");
      b.textContent = label;
      span.append(b, ` ${value}`);
      return span;
    }),
  );
}

export function usageFigures(usage) {
  if (!usage) return [];
  const figures = [
    ["prompt-tokens", "prompt", usage.prompt_tokens],
    ["completion-tokens", "completion", usage.completion_tokens],
    ["total-tokens", "total", usage.total_tokens],
  ];
  const cached = usage.prompt_tokens_details && usage.prompt_tokens_details.cached_tokens;
  if (cached !== undefined && cached !== null) figures.push(["cached-tokens", "cached", cached]);
  return figures.filter(([, , value]) => value !== undefined && value !== null);
}

// Time to first token and decode speed, from performance.now() stamps.
export function speedFigures(start, first, end, tokens, exact) {
  const figures = [];
  if (first !== null) figures.push(["ttft", "TTFT", `${Math.round(first - start)} ms`]);
  if (first !== null && tokens > 1 && end > first) {
    const rate = ((tokens - 1) * 1000) / (end - first);
    figures.push(["tokens-per-second", "tokens/s", `${exact ? "" : "≈"}${rate.toFixed(1)}`]);
  }
  return figures;
}
