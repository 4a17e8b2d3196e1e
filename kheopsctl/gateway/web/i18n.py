"""The web application's strings: one catalogue per language, keyed by a dotted name.

The language is the ``kheops-lang`` cookie (set by ``?lang=``), else the browser's Accept-Language, else English.
Pages get ``t(key)``; the ES modules get the ``js.*`` strings as a JSON block (``page_strings``).
"""

from __future__ import annotations

LANGUAGES = ("en", "fr")
LANG_COOKIE = "kheops-lang"

EN = {
    "app.name": "KHEOPS",
    "nav.inbox": "Inbox", "nav.albums": "Albums", "nav.upload": "Upload",
    "nav.skip": "Skip to the content",
    "account.menu": "Account", "account.console": "Account settings (Keycloak)", "account.logout": "Log out",
    "account.language": "Language",
    "signin.title": "Sign in", "signin.lead": "KHEOPS shares medical images between the people who need them.",
    "signin.button": "Log in", "signin.unavailable": "Logging in is not configured on this site (no web client secret).",
    "error.title": "Something went wrong", "error.retry": "Log in again",
    "error.login": "The sign-in could not be completed. Please try again.",
    "inbox.title": "Inbox", "albums.title": "Albums", "album.title": "Album", "upload.title": "Upload",
    "filter.patient_name": "Patient name", "filter.patient_id": "Patient ID", "filter.description": "Description",
    "filter.date_from": "Date from", "filter.date_to": "Date to", "filter.modality": "Modality",
    "filter.accession": "Accession number", "filter.apply": "Search", "filter.reset": "Reset",
    "col.patient": "Patient name", "col.patient_id": "Patient ID", "col.description": "Description",
    "col.date": "Date", "col.modality": "Modality", "col.counts": "Series / instances",
    "albums.create": "New album", "albums.name": "Name", "albums.description": "Description",
    "albums.create_button": "Create",
    "col.album": "Album", "col.studies": "Studies", "col.users": "Members",
    "upload.files": "Files", "upload.folder": "A folder", "upload.drop": "Or drop files and folders here",
    "upload.target": "Upload into", "upload.start": "Upload", "upload.inbox": "My inbox",
    "js.loading": "Loading…", "js.empty": "No study matches.", "js.error": "The request failed",
    "js.page": "Page {page} of {pages} ({total} studies)", "js.prev": "Previous", "js.next": "Next",
    "js.expand": "Show the series", "js.series": "Series", "js.instances": "instances",
    "js.select_series": "Select series {n}",
    "js.no_albums": "No album yet.", "js.created": "Album created.",
    "js.upload_summary": "{stored} stored, {failed} failed, {skipped} skipped of {total} files",
    "js.upload_batch": "Batch {n}", "js.upload_done": "Upload finished.",
    "js.skipped_dicomdir": "skipped: DICOMDIR", "js.skipped_junk": "skipped: not a DICOM file",
    "js.failed_reason": "refused (reason {reason})", "js.failed_http": "batch failed: HTTP {status}",
    "js.sort": "Sort by {col}",
}

FR = {
    "app.name": "KHEOPS",
    "nav.inbox": "Boîte de réception", "nav.albums": "Albums", "nav.upload": "Envoyer",
    "nav.skip": "Aller au contenu",
    "account.menu": "Compte", "account.console": "Paramètres du compte (Keycloak)", "account.logout": "Se déconnecter",
    "account.language": "Langue",
    "signin.title": "Connexion", "signin.lead": "KHEOPS partage les images médicales entre ceux qui en ont besoin.",
    "signin.button": "Se connecter",
    "signin.unavailable": "La connexion n'est pas configurée sur ce site (pas de secret du client web).",
    "error.title": "Une erreur est survenue", "error.retry": "Se reconnecter",
    "error.login": "La connexion n'a pas pu aboutir. Veuillez réessayer.",
    "inbox.title": "Boîte de réception", "albums.title": "Albums", "album.title": "Album", "upload.title": "Envoyer",
    "filter.patient_name": "Nom du patient", "filter.patient_id": "ID patient", "filter.description": "Description",
    "filter.date_from": "Date de début", "filter.date_to": "Date de fin", "filter.modality": "Modalité",
    "filter.accession": "Numéro d'accession", "filter.apply": "Rechercher", "filter.reset": "Réinitialiser",
    "col.patient": "Nom du patient", "col.patient_id": "ID patient", "col.description": "Description",
    "col.date": "Date", "col.modality": "Modalité", "col.counts": "Séries / instances",
    "albums.create": "Nouvel album", "albums.name": "Nom", "albums.description": "Description",
    "albums.create_button": "Créer",
    "col.album": "Album", "col.studies": "Études", "col.users": "Membres",
    "upload.files": "Fichiers", "upload.folder": "Un dossier", "upload.drop": "Ou déposez des fichiers et dossiers ici",
    "upload.target": "Envoyer dans", "upload.start": "Envoyer", "upload.inbox": "Ma boîte de réception",
    "js.loading": "Chargement…", "js.empty": "Aucune étude ne correspond.", "js.error": "La requête a échoué",
    "js.page": "Page {page} sur {pages} ({total} études)", "js.prev": "Précédente", "js.next": "Suivante",
    "js.expand": "Afficher les séries", "js.series": "Séries", "js.instances": "instances",
    "js.select_series": "Sélectionner la série {n}",
    "js.no_albums": "Aucun album pour l'instant.", "js.created": "Album créé.",
    "js.upload_summary": "{stored} enregistrés, {failed} refusés, {skipped} ignorés sur {total} fichiers",
    "js.upload_batch": "Lot {n}", "js.upload_done": "Envoi terminé.",
    "js.skipped_dicomdir": "ignoré : DICOMDIR", "js.skipped_junk": "ignoré : pas un fichier DICOM",
    "js.failed_reason": "refusé (raison {reason})", "js.failed_http": "lot refusé : HTTP {status}",
    "js.sort": "Trier par {col}",
}

CATALOGUES = {"en": EN, "fr": FR}
assert set(EN) == set(FR), "the French catalogue must have every English key"


def choose(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return "en"


def translator(lang: str):
    catalogue = CATALOGUES[lang]
    return lambda key: catalogue.get(key, EN.get(key, key))


def page_strings(lang: str) -> dict[str, str]:
    return {k[3:]: v for k, v in CATALOGUES[lang].items() if k.startswith("js.")}
