"""A TCP proxy on 127.0.0.1 in front of a real server, whose faults the test controls.

The service under test connects to the proxy instead of PostgreSQL or Redis; the real server is
never touched (the machine's shared servers must not be stopped or frozen). Modes:

- `forward`  bytes flow both ways (the default);
- `frozen`   connections stay open and new ones are accepted, but no byte moves: a server that
             hangs (SIGSTOPped, a dead network path);
- `stopped`  every connection is closed and new ones are refused: a server that is down;
- `loading`  (Redis only) every command gets `-LOADING`, as from a Redis loading its dump.

The proxy runs its own event loop in a thread, so it keeps working while the test blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Literal

Mode = Literal["forward", "frozen", "stopped", "loading"]
LOADING_REPLY = b"-LOADING Redis is loading the dataset in memory\r\n"


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._listen())

    def url(self, template: str) -> str:
        """`template` with {port} filled in, e.g. 'postgresql://postgres@127.0.0.1:{port}/db'."""
        return template.format(port=self.port)

    # -- control, from the test's thread

    def set(self, mode: Mode) -> None:
        self._call(self._set(mode))

    def close(self) -> None:
        self._call(self._set("stopped"))
        self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @contextlib.contextmanager
    def fault(self, mode: Mode) -> Iterator[None]:
        self.set(mode)
        try:
            yield
        finally:
            self.set("forward")

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    # -- the proxy, in its own loop

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set(self, mode: Mode) -> None:
        assert self._flowing is not None
        previous, self.mode = self.mode, mode
        if mode == "frozen":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode in ("stopped", "loading") or previous == "loading":
            for writer in list(self._writers):  # connections of the old mode go away
                writer.transport.abort()
            self._writers.clear()
        if mode == "stopped" and self._server is not None:
            self._server.close()
            self._server = None
        elif mode != "stopped" and self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.mode == "loading":
                await self._answer_loading(reader, writer)
                return
            assert self._flowing is not None
            await self._flowing.wait()
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    @staticmethod
    async def _answer_loading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read RESP commands (arrays of bulk strings) and answer each with -LOADING."""
        while True:
            header = await reader.readline()
            if not header:
                return
            if header.startswith(b"*"):
                for _ in range(int(header[1:])):
                    length = int((await reader.readline())[1:])
                    await reader.readexactly(length + 2)
            writer.write(LOADING_REPLY)
            await writer.drain()
