"""Web server and dashboard (``dlbacktrace serve``); needs the ``server`` extra.

``create_app`` builds the FastAPI app; :class:`ExplainService` is the model-serving core it
shares with the CLI. Importing this package does not import FastAPI.
"""

from dlbacktrace.apps.server.service import ExplainResult, ExplainService, record_report

__all__ = ["ExplainResult", "ExplainService", "create_app", "record_report"]


def __getattr__(name: str):  # lazy: FastAPI only when the app is built
    if name == "create_app":
        from dlbacktrace.apps.server.app import create_app

        return create_app
    raise AttributeError(name)
