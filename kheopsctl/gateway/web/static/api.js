// Calls to the site's own /api with the session cookie (HttpOnly: this code never sees a token) and the page's
// CSRF token, which every unsafe method must carry.
const csrfMeta = document.querySelector('meta[name="csrf-token"]');
export const csrf = csrfMeta ? csrfMeta.content : "";
const strings = JSON.parse(document.getElementById("kheops-strings").textContent);

export function t(key, values = {}) {
  const text = strings[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

export class ApiFailure extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, { method = "GET", body, headers = {}, accept = "application/json" } = {}) {
  const response = await fetch("/api" + path, {
    method, body, credentials: "same-origin", cache: "no-store",
    headers: { Accept: accept, "X-CSRF-Token": csrf, ...headers },
  });
  if (response.status === 401) {  // the session ended: back to the sign-in page, here
    window.location.assign(window.location.pathname);
    throw new ApiFailure(401, "signed out");
  }
  if (!response.ok) {
    let message = `${t("error")} (HTTP ${response.status})`;
    try { message = (await response.json()).error || message; } catch { /* not JSON */ }
    throw new ApiFailure(response.status, message);
  }
  return response;
}

// a DICOMweb search with no match answers 204 No Content: an empty list
export async function list(response) {
  return response.status === 204 ? [] : response.json();
}

export function form(values) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== "" && v != null) body.append(k, v);
  return { body, headers: { "Content-Type": "application/x-www-form-urlencoded" } };
}

// DICOM JSON helpers
export function value(item, tag) {
  const element = item[tag];
  return element && Array.isArray(element.Value) ? element.Value : [];
}
export function first(item, tag) {
  const v = value(item, tag)[0];
  if (v && typeof v === "object" && "Alphabetic" in v) return v.Alphabetic;
  return v ?? "";
}
export function personName(item, tag = "00100010") {
  return String(first(item, tag)).replace(/\^+/g, " ").trim();
}
export function dicomDate(text) {
  const s = String(text || "");
  return /^\d{8}$/.test(s) ? `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}` : s;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
