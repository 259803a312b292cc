"""Helpers for testing xsensei and code built on it (test catalogs, a local STAC API server).

Nothing here is imported by ``import xsensei``; the STAC server needs the ``stac`` extra
(``stac-fastapi-static`` and ``uvicorn``).
"""
