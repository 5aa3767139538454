"""Stopping the sidecar: clients are let go cleanly, the process exits, and clients come back."""

from __future__ import annotations

import asyncio
import signal

from tests.e2e.harness import JsClient, Stack, wait_for


async def test_sigterm_closes_clients_and_they_reconnect_after_restart(stack: Stack, unique: str) -> None:
    stack.create_user(f"{unique}stop")
    client = await JsClient.start(
        stack.strapi.url, stack.sidecar.url, f"{unique}stop", "Passw0rd!", "--reconnect"
    )
    try:
        await client.wait("connected")
        process = stack.sidecar._process
        assert process is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
        # uvicorn re-raises the signal once shut down, so the parent sees "terminated by SIGTERM".
        assert code in (0, -signal.SIGTERM)
        assert loop.time() - started < 5, "shutdown should not wait for clients to leave on their own"
        disconnect = await client.wait("disconnect")
        # A transport close, not "io server disconnect": socket.io clients reconnect by themselves.
        assert disconnect["reason"] == "transport close"
        log = stack.sidecar.log_text()
        assert "closed 1 client connections" in log
        assert "sidecar stopped" in log
        assert "Traceback" not in log

        stack.sidecar._process = None
        stack.sidecar.start()
        await wait_for(lambda: len(client.of_type("connected")) >= 2, within=30)
    finally:
        await client.close()
        if stack.sidecar._process is None:
            stack.sidecar.start()
