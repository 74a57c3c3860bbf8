// The playground's entry point: tabs, the API key dialog and the model pickers.

import { ApiError, getKey, listModels, setKey } from "./api.js";
import { initChat } from "./chat.js";
import { applyDefaults, initDefaults } from "./defaults.js";
import { initEmbed } from "./embed.js";
import { initProbs } from "./probs.js";
import { $, clearError, showError } from "./ui.js";

function selectTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.dataset.panel !== name;
  $("tooltip").hidden = true;
}

function showKeyState() {
  $("key-state").textContent = getKey() ? "set (this tab)" : "none";
}

function askForKey(reason) {
  $("key-reason").textContent = reason;
  if (!$("key-dialog").open) {
    $("key-input").value = "";
    $("key-dialog").showModal();
  }
  $("key-input").focus();
}

// Fill every picker with the served models of its task; ?model=ID selects one.
async function loadModels() {
  let models;
  try {
    models = await listModels();
  } catch (error) {
    showError(error); // a 401 opens the key dialog (below)
    return;
  }
  clearError();
  const wanted = new URLSearchParams(window.location.search).get("model");
  for (const select of document.querySelectorAll(".model-picker")) {
    const previous = select.value;
    const fitting = models.filter((m) => m.task === select.dataset.task);
    select.replaceChildren(
      ...fitting.map((m) => {
        const option = document.createElement("option");
        option.value = m.id;
        option.textContent = select.dataset.task === "text-generation" && !m.chat ? `${m.id} (base model)` : m.id;
        return option;
      }),
    );
    if (fitting.some((m) => m.id === previous)) select.value = previous;
    if (wanted && fitting.some((m) => m.id === wanted)) select.value = wanted;
    if (!fitting.length) {
      const option = document.createElement("option");
      option.value = "";
      option.textContent = "no model of this kind is served";
      select.append(option);
    }
  }
  if (wanted && !models.some((m) => m.id === wanted && m.task === "text-generation")) {
    showError(new Error(`The model '${wanted}' is not served for text generation here (disabled, unknown, or not allowed for this key).`));
  }
  applyDefaults(models);
  document.body.dataset.modelsLoaded = "true";
}

function init() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  $("error-close").addEventListener("click", clearError);
  $("key-button").addEventListener("click", () => askForKey("Enter the API key to send with every request."));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const action = event.submitter ? event.submitter.value : "save";
    $("key-dialog").close();
    if (action === "save") setKey($("key-input").value.trim());
    if (action === "forget") setKey("");
    showKeyState();
    if (action !== "cancel") loadModels();
  });
  // A 401 from any request (no key yet, a wrong or revoked one) asks for a key, saying why.
  document.addEventListener("playground:error", (event) => {
    const error = event.detail;
    if (error instanceof ApiError && error.status === 401) askForKey(error.message);
  });
  initChat();
  initProbs();
  initDefaults();
  initEmbed();
  showKeyState();
  loadModels();
}

init();
