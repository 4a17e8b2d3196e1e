// The study list (inbox or one album): filters, sorting and server-side paging through QIDO /api/studies; a row
// expands into its series (thumbnail, checkbox, counts).
import { api, el, first, list, personName, dicomDate, value, t } from "/assets/api.js";

const PAGE = 20;
const section = document.getElementById("studies");
const album = section.dataset.album;
const rows = document.getElementById("study-rows");
const status = document.getElementById("status");
const filters = document.getElementById("filters");
let offset = 0, total = 0, sort = "-StudyDate";

function scope() { return album ? { album } : { inbox: "true" }; }

function query() {
  const q = new URLSearchParams({ ...scope(), limit: PAGE, offset, sort, includefield: "AccessionNumber" });
  const data = new FormData(filters);
  for (const name of ["PatientName", "PatientID", "StudyDescription", "AccessionNumber", "ModalitiesInStudy"]) {
    const v = String(data.get(name) || "").trim();
    if (v) q.set(name, name === "PatientID" || name === "ModalitiesInStudy" ? v : `*${v}*`);
  }
  const from = String(data.get("from") || "").replaceAll("-", ""), to = String(data.get("to") || "").replaceAll("-", "");
  if (from || to) q.set("StudyDate", from === to ? from : `${from}-${to}`);
  return q;
}

async function load() {
  status.textContent = t("loading");
  let studies;
  try {
    const response = await api("/studies?" + query(), { accept: "application/dicom+json" });
    total = Number(response.headers.get("X-Total-Count") || 0);
    studies = await list(response);
  } catch (e) {
    status.textContent = `${t("error")}: ${e.message}`;
    return;
  }
  rows.replaceChildren(...studies.map(studyRow));
  const pages = Math.max(1, Math.ceil(total / PAGE));
  document.getElementById("page-info").textContent = t("page", { page: Math.floor(offset / PAGE) + 1, pages, total });
  document.getElementById("prev").disabled = offset === 0;
  document.getElementById("next").disabled = offset + PAGE >= total;
  status.textContent = studies.length ? "" : t("empty");
}

function studyRow(study) {
  const uid = first(study, "0020000D");
  const modalities = value(study, "00080061").join(", ");
  const toggle = el("button", { type: "button", class: "expand", "aria-expanded": "false",
                                "aria-label": t("expand") }, "▸");
  const row = el("tr", { class: "study", "data-uid": uid },
    el("td", {}, toggle),
    el("td", { class: "patient" }, el("span", { class: "name" }, personName(study)),
       el("br"), el("small", { class: "modalities" }, modalities)),
    el("td", {}, first(study, "00100020")),
    el("td", {}, first(study, "00081030")),
    el("td", {}, dicomDate(first(study, "00080020"))),
    el("td", { class: "modality" }, modalities),
    el("td", { class: "counts" }, `${first(study, "00201206")} / ${first(study, "00201208")}`));
  toggle.addEventListener("click", () => expand(row, toggle, uid));
  return row;
}

async function expand(row, toggle, uid) {
  const open = toggle.getAttribute("aria-expanded") === "true";
  const next = row.nextElementSibling;
  if (open) {
    if (next && next.classList.contains("series-row")) next.remove();
    toggle.setAttribute("aria-expanded", "false"); toggle.textContent = "▸";
    return;
  }
  toggle.setAttribute("aria-expanded", "true"); toggle.textContent = "▾";
  const cell = el("td", { colspan: "7" }, t("loading"));
  row.after(el("tr", { class: "series-row" }, cell));
  try {
    const response = await api(`/studies/${encodeURIComponent(uid)}/series?` + new URLSearchParams(scope()),
                               { accept: "application/dicom+json" });
    const series = await list(response);
    series.sort((a, b) => Number(first(a, "00200011") || 0) - Number(first(b, "00200011") || 0));
    const items = el("ul", { class: "series" }, ...series.map((s) => seriesItem(uid, s)));
    cell.replaceChildren(el("h2", { class: "sr-only" }, t("series")), items);
  } catch (e) {
    cell.textContent = `${t("error")}: ${e.message}`;
  }
}

function seriesItem(studyUid, s) {
  const uid = first(s, "0020000E");
  const number = first(s, "00200011");
  const box = el("input", { type: "checkbox", value: uid, "aria-label": t("select_series", { n: number }) });
  const thumb = el("img", { alt: "", width: "64", height: "64", loading: "lazy",
    src: `/api/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(uid)}/thumbnail?` +
         new URLSearchParams({ ...scope(), accept: "image/jpeg" }) });  // an <img> cannot set Accept
  thumb.addEventListener("error", () => thumb.classList.add("missing"), { once: true });
  return el("li", { class: "series-item", "data-uid": uid }, box, thumb,
    el("span", { class: "series-modality" }, first(s, "00080060")),
    el("span", { class: "series-description" }, `${number ? "#" + number + " " : ""}${first(s, "0008103E")}`),
    el("span", { class: "series-count" }, `${first(s, "00201209")} ${t("instances")}`));
}

filters.addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
filters.addEventListener("reset", () => { setTimeout(() => { offset = 0; load(); }); });
document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
document.getElementById("next").addEventListener("click", () => { offset += PAGE; load(); });
for (const button of document.querySelectorAll("button.sort")) {
  button.setAttribute("aria-label", t("sort", { col: button.textContent }));
  button.addEventListener("click", () => {
    const key = button.dataset.sort;
    sort = sort === key ? `-${key}` : key;
    for (const b of document.querySelectorAll("button.sort")) b.removeAttribute("aria-sort");
    button.setAttribute("aria-sort", sort.startsWith("-") ? "descending" : "ascending");
    offset = 0; load().then(() => { document.body.dataset.ready = "true"; });
  });
}
if (album) {
  api(`/albums/${encodeURIComponent(album)}`).then((r) => r.json()).then((a) => {
    document.getElementById("list-title").textContent = a.name;
    document.title = `${a.name} · KHEOPS`;
  }).catch((e) => { status.textContent = `${t("error")}: ${e.message}`; });
}
load().then(() => { document.body.dataset.ready = "true"; });
