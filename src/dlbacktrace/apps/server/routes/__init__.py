"""The server's routes by concern; :func:`~dlbacktrace.apps.server.app.create_app` wires them.

Each module holds one ``APIRouter`` (``router``); the served :class:`ExplainService`, the
request model and the config come from the app's state (:mod:`.state`).
"""
