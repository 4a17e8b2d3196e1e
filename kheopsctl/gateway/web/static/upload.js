// Upload: files, a folder or a drop, sorted (DICOMDIR and junk skipped), sent as STOW-RS batches of at most
// 10 MB or 99 files, three at a time, with a progress bar per batch and in total and the failures of each file
// from the reply's FailedSOPSequence. Bodies are Blobs made of the File objects: nothing is read into memory.
import { api, csrf, el, first, t, value } from "/assets/api.js";
import { inspect } from "/assets/dicom.js";

const MAX_BATCH_BYTES = 10 * 1024 * 1024, MAX_BATCH_FILES = 99, PARALLEL = 3;
const dropped = [];  // files from drag and drop; the inputs' own files are read at submit time
const totalBar = document.getElementById("total-progress");
const summary = document.getElementById("summary");
const errors = document.getElementById("file-errors");
const batchList = document.getElementById("batches");

const inputs = [document.getElementById("files"), document.getElementById("folder")];
function chosen() { return [...inputs.flatMap((input) => [...input.files]), ...dropped]; }
function collect(files) { for (const f of files) dropped.push(f); summary.textContent = `${chosen().length}`; }

const drop = document.getElementById("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault(); drop.classList.remove("over");
  const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  const files = [];
  async function visit(entry) {
    if (entry.isFile) files.push(await new Promise((ok, ko) => entry.file(ok, ko)));
    else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, ko) => reader.readEntries(ok, ko));
        if (!batch.length) break;
        for (const child of batch) await visit(child);
      }
    }
  }
  for (const entry of entries) await visit(entry);
  collect(files.length ? files : e.dataTransfer.files);
});

api("/albums?limit=200").then((r) => r.json()).then((albums) => {
  const select = document.getElementById("target");
  for (const a of albums) if (a.can_add_series) select.append(el("option", { value: a.album_id }, a.name));
}).catch(() => { /* the inbox stays available */ });

function batches(items) {
  const out = [];
  let current = [], bytes = 0;
  for (const item of items) {
    if (current.length && (current.length >= MAX_BATCH_FILES || bytes + item.file.size > MAX_BATCH_BYTES)) {
      out.push(current); current = []; bytes = 0;
    }
    current.push(item); bytes += item.file.size;
  }
  if (current.length) out.push(current);
  return out;
}

function body(batch) {
  const boundary = "kheops-" + crypto.randomUUID();
  const parts = [];
  for (const { file } of batch) {
    parts.push(`\r\n--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file);
  }
  parts.push(`\r\n--${boundary}--\r\n`);
  return { blob: new Blob(parts), type: `multipart/related; type="application/dicom"; boundary=${boundary}` };
}

function send(batch, album, onProgress) {
  const { blob, type } = body(batch);
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();  // fetch has no upload progress
    xhr.open("POST", "/api/studies" + (album ? `?album=${encodeURIComponent(album)}` : ""));
    xhr.withCredentials = false;  // same origin: the session cookie goes anyway, never to another origin
    xhr.setRequestHeader("Content-Type", type);
    xhr.setRequestHeader("Accept", "application/dicom+json");
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      let reply = null;
      try { reply = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      resolve({ status: xhr.status, reply });
    };
    xhr.onerror = () => resolve({ status: 0, reply: null });
    xhr.send(blob);
  });
}

function fail(name, why) { errors.append(el("li", { class: "file-error" }, `${name}: ${why}`)); }

document.getElementById("upload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const album = document.getElementById("target").value;
  const files = chosen();
  dropped.length = 0;
  for (const input of inputs) input.value = "";
  errors.replaceChildren(); batchList.replaceChildren();
  const counts = { stored: 0, failed: 0, skipped: 0, total: files.length };
  const dicom = [];
  for (const file of files) {
    const found = await inspect(file);
    if (found.kind === "dicom") dicom.push({ file, sop: found.sop });
    else { counts.skipped++; fail(file.webkitRelativePath || file.name, t(found.kind === "dicomdir" ? "skipped_dicomdir" : "skipped_junk")); }
  }
  const work = batches(dicom);
  const totalBytes = dicom.reduce((n, d) => n + d.file.size, 0) || 1;
  const sent = new Array(work.length).fill(0);
  totalBar.max = totalBytes; totalBar.value = 0;
  const show = () => { summary.textContent = t("upload_summary", counts); };
  let next = 0;
  async function worker() {
    while (next < work.length) {
      const index = next++;
      const batch = work[index];
      const size = batch.reduce((n, d) => n + d.file.size, 0) || 1;
      const bar = el("progress", { max: String(size), value: "0", "aria-label": t("upload_batch", { n: index + 1 }) });
      batchList.append(el("li", {}, t("upload_batch", { n: index + 1 }), " ", bar));
      const { status, reply } = await send(batch, album, (loaded) => {
        bar.value = loaded; sent[index] = Math.min(loaded, size);
        totalBar.value = sent.reduce((a, b) => a + b, 0);
      });
      bar.value = size; sent[index] = size; totalBar.value = sent.reduce((a, b) => a + b, 0);
      if (!reply || (status !== 200 && status !== 202 && status !== 409)) {
        counts.failed += batch.length;
        for (const d of batch) fail(d.file.webkitRelativePath || d.file.name, t("failed_http", { status }));
      } else {
        const failed = new Map(value(reply, "00081198").map((item) => [first(item, "00081155"), first(item, "00081197")]));
        for (const d of batch) {
          if (failed.has(d.sop)) { counts.failed++; fail(d.file.webkitRelativePath || d.file.name, t("failed_reason", { reason: failed.get(d.sop) })); }
          else counts.stored++;
        }
      }
      show();
    }
  }
  show();
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  show();
  summary.append(" ", t("upload_done"));
  summary.dataset.done = "true";
});
document.body.dataset.ready = "true";
