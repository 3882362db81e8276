"""The FastAPI dependencies routes share: the app's settings and engine, a token's reader.

Settings and engine live on `app.state` (the engine from startup on), so a route takes them as
parameters instead of closing over the settings `create_app` was given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from digest.config import Settings
from digest.core.tokens import BadToken, Purpose
from digest.model.subscriber import Subscriber
from digest.readers import signup
from digest.web.views import BadLink

__all__ = ["EngineDep", "SettingsDep", "app_engine", "app_settings", "token_reader"]


# async, so FastAPI calls them in the event loop instead of sending each to a worker thread.
async def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def app_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


SettingsDep = Annotated[Settings, Depends(app_settings)]
EngineDep = Annotated[Engine, Depends(app_engine)]


def token_reader(
    purpose: Purpose,
) -> Callable[[str, Settings, Engine], Subscriber | None]:
    """A dependency: the subscriber the path's `{token}` names (None if gone), changing nothing.

    A forged, tampered or expired token raises `BadLink` with the token's reason.
    """

    def reader(token: str, settings: SettingsDep, engine: EngineDep) -> Subscriber | None:
        try:
            return signup.subscriber_from_token(engine, settings, purpose, token)
        except BadToken as exc:
            raise BadLink(str(exc)) from None

    return reader
