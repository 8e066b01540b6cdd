"""The :class:`clr_sweep.AsyncClient` on the same flows as the sync client (fewer)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from cli.service import free_port
from clr_sweep import AsyncClient, Conflict, ConnectError, NotFound
from tests.client.conftest import TINY_RANGE_TEST, WAIT_S, Server

pytestmark = pytest.mark.worker


def _client(server: Server) -> AsyncClient:
    return AsyncClient(server.url, server.new_token(), retries=3, backoff=0.05, timeout=60.0)


def test_submit_wait_bounds_curve_plot_and_list(server: Server) -> None:
    async def flow() -> None:
        started = datetime.now(UTC)
        async with _client(server) as client:
            job = await client.submit_range_test(TINY_RANGE_TEST)
            seen: list[Any] = []

            async def progress(update: Any) -> None:
                seen.append(update)

            final = await client.wait(job, progress=progress, timeout=WAIT_S)
            assert final.status == "succeeded", final.error
            assert seen[-1].status == "succeeded"
            bounds = await client.bounds(final)
            assert 0 < bounds.base_lr < bounds.max_lr
            curve = await client.curve(final)
            assert len(curve) == 30
            assert bool(np.all(np.diff(curve.lrs) > 0))
            assert (await client.plot(final, "svg")).lstrip().startswith(b"<")
            events = [e async for e in client.events(final, last_event_id="1:25")]
            assert sum(len(e.data["values"]["lr"]) for e in events if e.event == "curve") == 5
            listed = [str(j.id) async for j in client.list(created_after=started)]
            assert str(job.id) in listed
            with pytest.raises(Conflict):
                await client.cancel(final)
            with pytest.raises(NotFound):
                await client.get(uuid.uuid4())

    asyncio.run(flow())


def test_a_closed_port_is_a_connect_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def probe() -> None:
        async with AsyncClient(url, "token", retries=1, backoff=0.01) as client:
            await client.health()

    with pytest.raises(ConnectError, match="clr-sweep serve"):
        asyncio.run(probe())
