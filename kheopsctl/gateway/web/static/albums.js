// The albums list and the "new album" form.
import { api, el, form, t } from "/assets/api.js";

const rows = document.getElementById("album-rows");
const status = document.getElementById("status");

async function load() {
  try {
    const albums = await (await api("/albums?limit=200")).json();
    rows.replaceChildren(...albums.map((a) => el("tr", { class: "album", "data-id": a.album_id },
      el("td", {}, el("a", { href: `/albums/${encodeURIComponent(a.album_id)}` }, a.name),
         el("br"), el("small", {}, a.description || "")),
      el("td", {}, (a.modalities || []).join(", ")),
      el("td", { class: "count-studies" }, a.number_of_studies),
      el("td", { class: "count-users" }, a.number_of_users))));
    if (!albums.length) status.textContent = t("no_albums");
  } catch (e) {
    status.textContent = `${t("error")}: ${e.message}`;
  }
}

document.getElementById("new-album").addEventListener("submit", async (e) => {
  e.preventDefault();
  const data = new FormData(e.target);
  try {
    await api("/albums", { method: "POST", ...form({ name: data.get("name"), description: data.get("description") }) });
    e.target.reset();
    status.textContent = t("created");
    await load();
  } catch (err) {
    status.textContent = `${t("error")}: ${err.message}`;
  }
});
load().then(() => { document.body.dataset.ready = "true"; });
