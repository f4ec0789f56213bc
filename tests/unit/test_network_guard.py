"""The test suite refuses non-loopback connections (the machine may only use 127.0.0.0/8)."""

import asyncio

import pytest


async def test_probe():
    with pytest.raises(OSError, match="network guard"):
        await asyncio.open_connection("10.255.255.53", 53)
