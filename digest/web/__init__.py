"""The web service: FastAPI routers for the pages, the preference centre and the webhook.

`create_app` is the package's public surface (`uvicorn --factory digest.web:create_app`).
"""

from digest.web.app import create_app

__all__ = ["create_app"]
