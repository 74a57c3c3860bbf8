// Structured output and tools on the chat tab: the response_format and tools boxes, the
// request fields they add, and the answer shown parsed (JSON content, tool calls).

import { $ } from "./ui.js";

// A box's JSON, or an Error naming the box.
function parseBox(id, label) {
  const raw = $(id).value.trim();
  if (!raw) return undefined;
  try {
    return JSON.parse(raw);
  } catch (error) {
    throw new Error(`The ${label} box is not valid JSON: ${error.message}`);
  }
}

// The request fields from the boxes (throws an Error naming a box that is not JSON).
export function structuredFields() {
  const fields = {};
  const format = $("chat-format").value;
  if (format === "json_object") fields.response_format = { type: "json_object" };
  if (format === "json_schema") {
    const schema = parseBox("chat-schema", "JSON schema");
    if (schema === undefined) throw new Error("The JSON schema box is empty.");
    fields.response_format = {
      type: "json_schema",
      json_schema: { name: $("chat-schema-name").value.trim() || "answer", schema, strict: true },
    };
  }
  const tools = parseBox("chat-tools", "tools");
  if (tools !== undefined) {
    if (!Array.isArray(tools)) throw new Error("The tools box must hold a JSON list of tools.");
    if (tools.length) {
      fields.tools = tools;
      fields.tool_choice = $("chat-tool-choice").value;
    }
  }
  return fields;
}

// Accumulates streamed tool-call deltas by index, as OpenAI's SDKs do.
export class ToolCallCollector {
  constructor() {
    this.calls = [];
  }

  feed(deltas) {
    for (const delta of deltas || []) {
      const call = (this.calls[delta.index] ||= { id: "", type: "function", function: { name: "", arguments: "" } });
      if (delta.id) call.id = delta.id;
      if (delta.function && delta.function.name) call.function.name += delta.function.name;
      if (delta.function && delta.function.arguments) call.function.arguments += delta.function.arguments;
    }
  }
}

function parsedBlock(title, value) {
  const block = document.createElement("div");
  block.className = "parsed";
  const head = document.createElement("div");
  head.className = "parsed-title";
  head.textContent = title;
  const pre = document.createElement("pre");
  pre.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  block.append(head, pre);
  return block;
}

function parsedOrNote(text) {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, value: `not valid JSON: ${error.message}` };
  }
}

// Shows under the answer its content parsed as JSON (when a JSON format was asked for)
// and each tool call with its arguments parsed.
export function showParsed(answer, { content, jsonAsked, calls }) {
  if (jsonAsked && content) {
    const parsed = parsedOrNote(content);
    const block = parsedBlock(parsed.ok ? "parsed JSON" : "JSON", parsed.value);
    block.dataset.valid = String(parsed.ok);
    answer.append(block);
  }
  for (const call of calls) {
    const parsed = parsedOrNote(call.function.arguments || "{}");
    const block = parsedBlock(`tool call: ${call.function.name}`, parsed.value);
    block.classList.add("tool-call");
    block.dataset.name = call.function.name;
    block.dataset.valid = String(parsed.ok);
    answer.append(block);
  }
}

export function initStructured() {
  const toggle = () => {
    $("chat-schema-box").hidden = $("chat-format").value !== "json_schema";
  };
  $("chat-format").addEventListener("change", toggle);
  toggle();
}
