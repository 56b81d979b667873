// Talking to the management API: the session's token on every request, the API's errors
// as readable messages, and whether the broker can be reached at all (the shell says so,
// and keeps asking until it can again).

const SESSION_KEY = "wharf.session";

/** Events: "session" when the session ends (expired, logged out, password changed);
 *  "reachable" with detail true/false when the broker stops or starts answering. */
export const events = new EventTarget();

let reachable = true;

function setReachable(now) {
  if (now === reachable) return;
  reachable = now;
  events.dispatchEvent(new CustomEvent("reachable", { detail: now }));
}

/** The 401 reasons that say the session itself is refused (rather than one request). */
const LOGIN_REFUSALS = ["Login failed", "Session expired", "Not management user", "User can only log in via localhost"];

/** An answer other than 2xx, or no answer: `status` 0 means the broker was unreachable. */
export class ApiError extends Error {
  constructor(status, message, error = "") {
    super(message);
    this.status = status;
    this.error = error;
  }
}

/** The logged-in user: {token, name, tags, expires}, kept in local storage so other tabs
 *  and reloads share it. It holds a signed token, never the password. */
export function session() {
  try {
    // Its expiry is the broker's to judge ("Session expired"): this browser's clock may
    // not agree with the broker's.
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    if (saved && saved.token) return saved;
  } catch {
    // A damaged entry is no session.
  }
  return null;
}

export function hasTag(tag) {
  const s = session();
  if (!s) return false;
  return s.tags.includes(tag) || s.tags.includes("administrator");
}

export const isAdministrator = () => hasTag("administrator");
export const isMonitor = () => hasTag("monitoring");
export const isPolicymaker = () => hasTag("policymaker");

function endSession(reason) {
  localStorage.removeItem(SESSION_KEY);
  events.dispatchEvent(new CustomEvent("session", { detail: reason }));
}

export async function login(username, password) {
  const answer = await request("POST", "/api/wharf/session", { username, password }, { anonymous: true });
  localStorage.setItem(
    SESSION_KEY,
    JSON.stringify({ token: answer.token, name: answer.name, tags: answer.tags, expires: answer.expires }),
  );
  return answer;
}

/** Keeps the session's tags as the broker has them now (they may change after login). */
export function updateTags(tags) {
  const s = session();
  if (!s || JSON.stringify(s.tags) === JSON.stringify(tags)) return false;
  localStorage.setItem(SESSION_KEY, JSON.stringify({ ...s, tags }));
  return true;
}

/** Whether a storage event (another tab) changed the session. */
export function isSessionKey(key) {
  return key === SESSION_KEY || key === null;
}

export async function logout() {
  try {
    await request("DELETE", "/api/wharf/session");
  } catch {
    // Logged out here whatever the broker says.
  }
  endSession("You have logged out.");
}

/** The message an API error body carries: {"error": ..., "reason": ...}. */
async function reasonOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const reason = typeof body.reason === "string" ? body.reason : JSON.stringify(body.reason ?? body);
    return { reason, error: body.error || "" };
  } catch {
    return { reason: text || response.statusText || `HTTP ${response.status}`, error: "" };
  }
}

/** One request. `body` is sent as JSON (or as is, when a string). Answers the parsed
 *  JSON (null for an empty answer), or throws an ApiError. */
export async function request(method, path, body, options = {}) {
  const headers = { ...(options.headers || {}) };
  const s = session();
  if (s && !options.anonymous) headers.Authorization = `Bearer ${s.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    setReachable(false);
    throw new ApiError(0, "The broker cannot be reached.");
  }
  setReachable(true);
  if (response.status === 401 && s && !options.anonymous) {
    const { reason } = await reasonOf(response);
    if (!LOGIN_REFUSALS.includes(reason)) {
      // Refused by permissions, not a failed login: the session goes on.
      throw new ApiError(401, reason, "not_authorised");
    }
    endSession(
      reason === "Session expired"
        ? "Your session has expired: log in again."
        : reason === "Login failed"
          ? "Your session has ended (your password changed, or your user was removed): log in again."
          : `Logged out: ${reason}.`,
    );
    throw new ApiError(401, reason, "not_authorised");
  }
  if (!response.ok) {
    const { reason, error } = await reasonOf(response);
    throw new ApiError(response.status, reason, error);
  }
  if (options.raw) return response;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path) => request("GET", path);
export const put = (path, body) => request("PUT", path, body ?? {});
export const post = (path, body) => request("POST", path, body ?? {});
export const del = (path, body) => request("DELETE", path, body);

/** A query string from an object, leaving out empty values: "?page=1&name=x". */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "" || value === false) continue;
    search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** An API path from segments, each percent-encoded: apiPath("queues", "/", "q") is
 *  "/api/queues/%2F/q". */
export function apiPath(...segments) {
  return "/api/" + segments.map((s) => encodeURIComponent(s)).join("/");
}
