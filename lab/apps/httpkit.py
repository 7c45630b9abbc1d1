"""HTTP plumbing shared by the Stars apps: fresh-connection clients and a no-keep-alive server.

Owns the two rules that make the Stars graph honest about policy: a client opens a new TCP
connection (and resolves the name again) for every request, and a server closes every connection
after its response. Conntrack lets an established connection through after a policy starts to
deny it, so a kept-alive connection would show "reachable" forever. It does not own any route or
status format (`lab.apps.stars_probe`, `lab.apps.management_ui`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL


def check_http_url(url: str, field: str) -> str:
    """Return `url` if it is an absolute http:// URL with a host, else raise ValueError naming `field`."""
    parsed = URL(url)
    if parsed.scheme != "http" or not parsed.host:
        raise ValueError(f"{field}: {url!r} is not an absolute http:// URL")
    return url


def fresh_connection_session(timeout: float) -> aiohttp.ClientSession:
    """A client session with one new connection per request and a fresh name lookup each time.

    The threaded resolver calls getaddrinfo, which reads the /etc/hosts that `ip netns exec`
    bind-mounts from /etc/netns/<netns>/hosts.
    """
    resolver = aiohttp.ThreadedResolver()
    connector = aiohttp.TCPConnector(force_close=True, use_dns_cache=False, resolver=resolver)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int | None, bytes, str | None]:
    """GET `url`: (status, body, None) on any HTTP answer, (None, b"", reason) if none came."""
    try:
        async with session.get(url, allow_redirects=False) as response:
            return response.status, await response.read(), None
    except TimeoutError:
        return None, b"", "timed out"
    except (aiohttp.ClientError, OSError) as error:
        return None, b"", type(error).__name__ + (f": {error}" if str(error) else "")


@web.middleware
async def close_after_response(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Middleware: no keep-alive; each connection carries one request."""
    response = await handler(request)
    response.force_close()
    return response


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port; return the runner (for cleanup) and the bound port (0 picks one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])
