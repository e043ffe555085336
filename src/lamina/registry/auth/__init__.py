"""Registry authentication and authorisation (issue 5): htpasswd users, Docker token flow, access rules.

The HTTP layer sees one middleware (:func:`lamina.registry.auth.middleware.auth_middleware`) and one
:class:`AuthService` on a typed AppKey; handlers never look at credentials. Off unless the config has an
``[auth]`` section.
"""

from __future__ import annotations

from .config import AccessRule, AuthConfig, TokenSettings, parse_auth
from .service import AUTH, AuthService, Identity

__all__ = ["AUTH", "AccessRule", "AuthConfig", "AuthService", "Identity", "TokenSettings", "parse_auth"]
