// The chat tab: a multi-turn conversation streamed from /v1/chat/completions.

import { apiStream, getKey, isAbort } from "./api.js";
import { curlSnippet, pythonSnippet } from "./snippets.js";
import { initStructured, showParsed, structuredFields, ToolCallCollector } from "./structured.js";
import { $, clearError, linesField, numberField, showError, showFigures, speedFigures, usageFigures } from "./ui.js";

const PATH = "/v1/chat/completions";
const messages = []; // the conversation, without the system prompt
let controller = null;
let lastBody = null;

// The request body for `conversation`, from the controls as they are now.
function requestBody(conversation) {
  const system = $("chat-system").value.trim();
  const body = {
    model: $("chat-model").value,
    messages: [...(system ? [{ role: "system", content: system }] : []), ...conversation],
  };
  for (const [name, id] of [["temperature", "chat-temperature"], ["top_p", "chat-top-p"], ["max_tokens", "chat-max-tokens"], ["seed", "chat-seed"]]) {
    const value = numberField(id);
    if (value !== undefined) body[name] = value;
  }
  const stop = linesField("chat-stop");
  if (stop.length) body.stop = stop;
  Object.assign(body, structuredFields());
  body.stream = true;
  body.stream_options = { include_usage: true };
  return body;
}

function bubble(role, text) {
  const log = $("chat-log");
  log.querySelector(".empty")?.remove();
  const item = document.createElement("div");
  item.className = `message ${role}`;
  item.dataset.role = role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role;
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;
  item.append(who, content);
  log.append(item);
  log.scrollTop = log.scrollHeight;
  return item;
}

function setBusy(busy) {
  $("chat-send").disabled = busy;
  $("chat-stop-button").disabled = !busy;
}

async function send(event) {
  event.preventDefault();
  const text = $("chat-input").value;
  if (!text.trim() || controller) return;
  if (!$("chat-model").value) {
    showError(new Error("No text-generation model is served here, or the model list could not be loaded."));
    return;
  }
  clearError();
  let body;
  try {
    body = requestBody([...messages, { role: "user", content: text }]);
  } catch (error) {
    showError(error); // a box that is not JSON: nothing is sent
    return;
  }
  messages.push({ role: "user", content: text });
  const userItem = bubble("user", text);
  const answer = bubble("assistant", "");
  answer.dataset.state = "streaming";
  const content = answer.querySelector(".content");
  $("chat-input").value = "";
  lastBody = body;
  const toolCalls = new ToolCallCollector();
  controller = new AbortController();
  setBusy(true);

  const start = performance.now();
  let first = null;
  let chunks = 0;
  let usage = null;
  let finish = null;
  let text_ = "";
  try {
    await apiStream(PATH, body, controller.signal, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta && choice.delta.content;
        const callDeltas = choice.delta && choice.delta.tool_calls;
        if (delta || callDeltas) {
          if (first === null) first = performance.now();
          chunks += 1;
          text_ += delta || "";
          toolCalls.feed(callDeltas);
          const calls = toolCalls.calls.map((c) => `${c.function.name}(${c.function.arguments})`);
          content.textContent = [text_, ...calls].filter(Boolean).join("\n");
          $("chat-log").scrollTop = $("chat-log").scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
    answer.dataset.state = "done";
    const calls = toolCalls.calls.filter(Boolean);
    messages.push(calls.length ? { role: "assistant", content: text_ || null, tool_calls: calls } : { role: "assistant", content: text_ });
    showParsed(answer, { content: text_, jsonAsked: Boolean(body.response_format), calls });
  } catch (error) {
    if (isAbort(error)) {
      answer.dataset.state = "stopped";
      finish = "stopped";
      if (text_) messages.push({ role: "assistant", content: text_ });
      else answer.remove();
    } else {
      // The turn failed: take it back and give the text back to the box.
      messages.pop();
      userItem.remove();
      answer.remove();
      $("chat-input").value = text;
      showError(error);
    }
  } finally {
    const end = performance.now();
    controller = null;
    setBusy(false);
    if (answer.isConnected) {
      const tokens = usage ? usage.completion_tokens : chunks;
      showFigures($("chat-stats"), [
        ...speedFigures(start, first, end, tokens, Boolean(usage)),
        ...usageFigures(usage),
        ["finish", "finish", finish || "unknown"],
      ]);
    }
  }
}

function snippetBody() {
  if (lastBody) return lastBody;
  const pending = $("chat-input").value;
  return requestBody(pending ? [...messages, { role: "user", content: pending }] : messages);
}

async function copy(kind) {
  let body;
  try {
    body = snippetBody();
  } catch (error) {
    showError(error);
    return;
  }
  const origin = window.location.origin;
  const text = kind === "curl" ? curlSnippet(origin, PATH, body, Boolean(getKey())) : pythonSnippet(origin, body);
  const shown = $("snippet");
  shown.textContent = text;
  shown.dataset.kind = kind;
  shown.hidden = false;
  try {
    await navigator.clipboard.writeText(text);
    $("copy-note").textContent = `Copied the ${kind === "curl" ? "curl command" : "Python code"} of the last request.`;
  } catch (_) {
    $("copy-note").textContent = "The clipboard is not available here: copy the text below.";
  }
}

export function initChat() {
  $("chat-form").addEventListener("submit", send);
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("chat-form").requestSubmit();
  });
  $("chat-stop-button").addEventListener("click", () => controller && controller.abort());
  $("chat-clear").addEventListener("click", () => {
    if (controller) controller.abort();
    messages.length = 0;
    lastBody = null;
    $("chat-log").replaceChildren();
    $("chat-stats").replaceChildren();
    $("snippet").hidden = true;
  });
  $("copy-curl").addEventListener("click", () => copy("curl"));
  $("copy-python").addEventListener("click", () => copy("python"));
  initStructured();
}
