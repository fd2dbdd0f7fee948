// The API client: every call carries the token (if the server wants one)
// in a header, never a cookie. Server-sent events are read from a fetch
// stream rather than EventSource, which cannot send a header.

const TOKEN_KEY = "treeshift-token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

function headers(extra) {
  const h = { ...extra };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

export function migrationPath(name, rest = "") {
  return `/api/migrations/${encodeURIComponent(name)}${rest}`;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

async function answer(response) {
  const text = await response.text();
  let body;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { error: text };
  }
  if (!response.ok) {
    throw new ApiError(response.status, body.error || `${response.status} ${response.statusText}`);
  }
  return body;
}

export async function get(path) {
  return answer(await fetch(path, { headers: headers() }));
}

export async function post(path, body = {}) {
  return answer(
    await fetch(path, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    }),
  );
}

// Reads server-sent events from `path`, calling onEvent(name, data) for
// each, until the stream ends or `signal` aborts. Resolves when it ends.
export async function events(path, signal, onEvent) {
  const response = await fetch(path, { headers: headers(), signal });
  if (!response.ok) await answer(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}
