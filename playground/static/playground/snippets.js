// "Copy as curl" and "Copy as Python (openai SDK)": the exact request the page sends.
// The key itself is never copied; the snippets read it from $OPENAI_API_KEY.

function shellQuote(text) {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

export function curlSnippet(origin, path, body, withKey) {
  const lines = [`curl ${shellQuote(origin + path)}`, `-H 'Content-Type: application/json'`];
  if (withKey) lines.push(`-H "Authorization: Bearer $OPENAI_API_KEY"`);
  if (body.stream) lines.push("-N");
  lines.push(`-d ${shellQuote(JSON.stringify(body, null, 2))}`);
  return lines.join(" \\\n  ");
}

// A JSON value written as a Python literal.
export function pyLiteral(value, indent = 0) {
  const pad = " ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    const items = value.map((item) => `${pad}    ${pyLiteral(item, indent + 4)}`);
    return `[\n${items.join(",\n")},\n${pad}]`;
  }
  const entries = Object.entries(value);
  if (entries.length === 0) return "{}";
  const items = entries.map(([k, v]) => `${pad}    ${JSON.stringify(k)}: ${pyLiteral(v, indent + 4)}`);
  return `{\n${items.join(",\n")},\n${pad}}`;
}

// body is a /v1/chat/completions request; every field becomes a keyword argument.
export function pythonSnippet(origin, body) {
  const args = Object.entries(body)
    .map(([name, value]) => `    ${name}=${pyLiteral(value, 4)},`)
    .join("\n");
  const head = [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(origin + "/v1")}, api_key=os.environ.get("OPENAI_API_KEY", "unused"))`,
  ];
  if (body.stream) {
    return [
      ...head,
      "stream = client.chat.completions.create(",
      args,
      ")",
      "for chunk in stream:",
      "    if chunk.choices and chunk.choices[0].delta.content:",
      '        print(chunk.choices[0].delta.content, end="", flush=True)',
      ...(body.tools ? ["    if chunk.choices and chunk.choices[0].delta.tool_calls:", "        print(chunk.choices[0].delta.tool_calls)"] : []),
      "    if chunk.usage:",
      "        print()",
      "        print(chunk.usage)",
      "",
    ].join("\n");
  }
  return [...head, "completion = client.chat.completions.create(", args, ")",
    "print(completion.choices[0].message.content)", ""].join("\n");
}
