// The server's /v1/ API as the playground uses it: the API key (sessionStorage only),
// JSON requests, Server-Sent Events read from a fetch stream, and OpenAI error payloads.

const KEY_NAME = "gpt3dev.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

// An error answer from the API, carrying OpenAI's {message, type, param, code}.
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || null;
    this.param = error.param || null;
    this.code = error.code || null;
  }
}

function headers(json) {
  const out = {};
  if (json) out["Content-Type"] = "application/json";
  const key = getKey();
  if (key) out["Authorization"] = `Bearer ${key}`;
  return out;
}

async function errorFrom(response) {
  let payload = null;
  try {
    payload = await response.json();
  } catch (_) {
    // not JSON: fall through to the status line
  }
  const error = payload && payload.error ? payload.error : { message: `${response.status} ${response.statusText}` };
  return new ApiError(response.status, error);
}

// GET or POST a JSON endpoint; resolves to the parsed body, rejects with ApiError.
export async function apiJSON(path, body = undefined, signal = undefined) {
  const init = { method: body === undefined ? "GET" : "POST", headers: headers(body !== undefined), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

// POST a streaming request and call onEvent(parsed) for every SSE data event until
// [DONE]. Aborting `signal` closes the connection, which makes the server cancel.
export async function apiStream(path, body, signal, onEvent) {
  const response = await fetch(path, {
    method: "POST",
    headers: { ...headers(true), Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.error) throw new ApiError(response.status, event.error);
      onEvent(event);
    }
  }
}

// The served models, each with its task and sampling defaults, from /v1/models and /v1/models/{id}.
export async function listModels() {
  const list = await apiJSON("/v1/models");
  return Promise.all(
    list.data.map(async (model) => {
      const detail = await apiJSON(`/v1/models/${encodeURIComponent(model.id)}`);
      return { id: model.id, task: detail.task, chat: Boolean(detail.chat), samplingDefaults: detail.sampling_defaults || {} };
    }),
  );
}

export function isAbort(error) {
  return error && error.name === "AbortError";
}
