"""Web server and dashboard (``dlbacktrace serve``); needs the ``server`` extra.

``create_app`` builds the FastAPI app from the route modules in :mod:`.routes`;
:class:`ExplainService` is the model-serving core it shares with the CLI. Importing this
package does not import FastAPI.
"""

from dlbacktrace.apps.server.config import ServerConfig, ServerConfigError
from dlbacktrace.apps.server.service import ExplainResult, ExplainService, record_report

__all__ = [
    "ExplainResult",
    "ExplainService",
    "ServerConfig",
    "ServerConfigError",
    "create_app",
    "record_report",
]


def __getattr__(name: str):  # lazy: FastAPI only when the app is built
    if name == "create_app":
        from dlbacktrace.apps.server.app import create_app

        return create_app
    raise AttributeError(name)
