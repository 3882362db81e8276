"""An editor of the desk: an account with a role. The password hash never leaves the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

__all__ = ["ROLES", "Editor", "Role"]

Role = Literal["editor", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)


@dataclass(frozen=True, slots=True)
class Editor:
    id: int
    email: str
    name: str | None
    role: Role
    created_at: datetime
    last_login_at: datetime | None

    @property
    def is_admin(self) -> bool:
        """Admins may also import and erase subscribers and manage other editors."""
        return self.role == "admin"
