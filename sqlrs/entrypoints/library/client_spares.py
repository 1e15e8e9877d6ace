"""What a Client asks the engine to keep started ahead: warm pools (`set_pool`, `release_pool`)
and sessions (`begin_session`, `end_session`), the demand the engine's keepers follow."""

from __future__ import annotations

from typing import Any

from sqlrs.entrypoints.library.client_base import ClientBase
from sqlrs.entrypoints.library.client_types import State, _owner


class Spares(ClientBase):
    # warm pools ---------------------------------------------------------------------------------
    def set_pool(self, state: State | str, size: int, *, holder: str | None = None,
                 wait_ready: float = 0.0, owned: bool = True) -> dict[str, Any]:
        """Keep `size` started spares of `state` ready for `create_instance(pool=True)`.

        `holder` names the user of the pool (the pool is drained when its last holder calls
        `release_pool`, or, when `owned`, once this process is gone); `wait_ready` waits (seconds)
        until the spares are up.
        """
        body: dict[str, Any] = {"size": size, "holder": holder, "wait_ready": wait_ready,
                                "image": state.image if isinstance(state, State) else self.image}
        if owned and holder:
            body["owner"] = _owner()
        data: dict[str, Any] = self.call("PUT", f"/v1/pools/{state}", body,
                                         timeout=max(300.0, wait_ready + 60))
        return data

    def release_pool(self, state: State | str, holder: str | None = None) -> dict[str, Any]:
        """Leave the pool as `holder` (drained when no holder is left), or drain it. Answers at once:
        the engine removes the spares in the background."""
        query = f"?holder={_quote(holder)}" if holder else ""
        data: dict[str, Any] = self.call("DELETE", f"/v1/pools/{state}{query}")
        return data

    def pools(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.call("GET", "/v1/pools")
        return data

    # sessions -----------------------------------------------------------------------------------
    def begin_session(self, state: State | str, session: str, *, owned: bool = True) -> dict[str, Any]:
        """Tell the engine that a run of instances of `state` begins (a test session), named
        `session`; call it again for every state the run uses. While a session holds a state the
        engine keeps spares of it (copies made ahead, warm instances) at the run's demand, starting
        at what its previous run took; `end_session` lets them go within seconds. `owned`: the
        session ends by itself when this process is gone."""
        body: dict[str, Any] = {"state_id": str(state)}
        if owned:
            body["owner"] = _owner()
        data: dict[str, Any] = self.call("PUT", f"/v1/sessions/{_quote(session)}", body)
        return data

    def end_session(self, session: str) -> dict[str, Any]:
        """The run named `session` is over: the engine keeps only a small idle level of spares for
        the states it held (for the few most recently used states), nothing for superseded ones."""
        data: dict[str, Any] = self.call("DELETE", f"/v1/sessions/{_quote(session)}")
        return data



def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
