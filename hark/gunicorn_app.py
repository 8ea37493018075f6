"""One gunicorn application class for every HTTP service Hark runs (API, license proxy, dispatcher)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication


class GunicornApp(BaseApplication):
    """Serves the WSGI app that `load_app` returns, with gunicorn settings from `options`.

    `load_app` runs in each worker process (nothing is preloaded), so an app holding connection pools or
    background threads is built after the fork. Options gunicorn does not know, or set to None, are skipped.
    """

    def __init__(self, load_app: Callable[[], Any], options: dict[str, Any]) -> None:
        self.load_app = load_app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self.load_app()

    def serve(self) -> int:
        """Run until gunicorn stops; its exit status (gunicorn ends with SystemExit)."""
        try:
            self.run()
        except SystemExit as stop:
            code = stop.code
            return code if isinstance(code, int) else (0 if code is None else 1)
        return 0
