"""DICOMweb enforcement: QIDO, WADO-RS/URI, STOW-RS, ZIP and sharing, in front of any DICOMweb PACS.

Every route decides per series (through album membership) and streams the PACS's bytes without holding a
response whole in memory. See docs/dicomweb.md for the routes and the download-permission decision.
"""
