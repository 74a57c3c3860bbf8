// Pre-fills the sampling controls from the chosen model's registry defaults (the
// `sampling_defaults` of GET /v1/models/{id}): what the page then sends is what the
// model would get anyway. A box the model has no default for goes back to the page's own
// value; clearing a box sends nothing for that field.

import { $ } from "./ui.js";

const PANELS = [
  {
    picker: "chat-model",
    note: "chat-defaults",
    fields: { temperature: "chat-temperature", top_p: "chat-top-p", max_tokens: "chat-max-tokens", stop: "chat-stop" },
  },
  { picker: "probs-model", note: "probs-defaults", fields: { temperature: "probs-temperature", max_tokens: "probs-max-tokens" } },
];

let served = [];

function describe(defaults) {
  return Object.entries(defaults)
    .map(([name, value]) => `${name} ${JSON.stringify(value)}`)
    .join(", ");
}

function fill(panel) {
  const select = $(panel.picker);
  if (select.dataset.defaultsFor === select.value) return; // keep what the user typed for this model
  select.dataset.defaultsFor = select.value;
  const model = served.find((m) => m.id === select.value);
  const defaults = (model && model.samplingDefaults) || {};
  const used = {};
  for (const [name, id] of Object.entries(panel.fields)) {
    const box = $(id);
    if (defaults[name] === undefined) {
      box.value = box.defaultValue;
    } else {
      box.value = name === "stop" ? defaults[name].join("\n") : String(defaults[name]);
      used[name] = defaults[name];
    }
  }
  const note = $(panel.note);
  note.textContent = Object.keys(used).length ? `Pre-filled from the model's sampling defaults: ${describe(used)}.` : "";
  note.hidden = !note.textContent;
}

// Called with the served models (each with its samplingDefaults) once the pickers are filled.
export function applyDefaults(models) {
  served = models;
  for (const panel of PANELS) fill(panel);
}

export function initDefaults() {
  for (const panel of PANELS) $(panel.picker).addEventListener("change", () => fill(panel));
}
