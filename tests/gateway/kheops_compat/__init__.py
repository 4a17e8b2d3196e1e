"""KHEOPS compatibility suite (issue 10): each test sends the exact request a KHEOPS client sends and checks the
exact reply KHEOPS gives (status, field names, shapes), against the real gateway, PostgreSQL and Orthanc."""
