"""The services handed to handlers by dependency injection (`NamedDependency[...]` parameters).

Each is built once at start-up (app.py's lifespan puts it on the application state); a router
provides the ones its handlers use, and a handler names one as a parameter, e.g.
`webhooks: NamedDependency[Webhooks]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

from suppress.api import auth


def _from_state(name: str) -> Callable[[State], Any]:
    def provide(state: State) -> Any:
        return state[name]

    provide.__name__ = f"provide_{name}"
    return provide


def services(*names: str) -> dict[str, Provide]:
    """Providers of the named services (attributes of the application state) for a router.

    Given per router, not app-wide: Litestar reads a body or query field that shares its name
    with a dependency as a failed dependency (a 500 instead of a 422).
    """
    return {name: Provide(_from_state(name), sync_to_thread=False) for name in names}


# Every route: the caller its `requires` guard let in.
DEPENDENCIES: dict[str, Provide] = {"principal": Provide(auth.principal, sync_to_thread=False)}
