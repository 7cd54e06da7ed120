"""Authentication steps that may block, run off the event loop.

pyspnego's NTLM and Negotiate contexts call GSSAPI, and GSSAPI may talk to a
Kerberos KDC (a ticket from a password, a service ticket) with blocking
sockets and its own retry timers: on the event loop, an unreachable KDC would
stall every connection and every timer of the process. Such a step runs in a
worker thread instead, so the caller's time budget (the connect timeout)
bounds it like any other phase.

On cancellation the thread is abandoned, not waited for: GSSAPI offers no way
to interrupt it, and its result belongs to an attempt that is over. trio's
worker threads are daemon threads, so one still stuck in a KDC exchange does
not keep the process alive at exit. The steps have a limiter of their own:
abandoned threads keep their token until they end, and must not starve
trio's default limiter (name resolution uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

import trio

from ._auth import ProxyAuthenticator
from ._connect import ProxyReply

__all__ = ["respond", "run_auth_step"]

_T = TypeVar("_T")

# Concurrent blocking steps per process; more wait (cancellably) for a slot.
AUTH_THREADS = 16
_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("auth_threads")


async def run_auth_step(step: Callable[[], _T]) -> _T:
    """``step()`` in a worker thread; cancelling returns at once (see above)."""
    try:
        limiter = _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(AUTH_THREADS)
        _LIMITER.set(limiter)
    return await trio.to_thread.run_sync(step, abandon_on_cancel=True, limiter=limiter)


async def respond(
    authenticator: ProxyAuthenticator, reply: ProxyReply, *, connection_reusable: bool
) -> str:
    """:meth:`ProxyAuthenticator.respond`, in a worker thread when it may block."""
    step = partial(authenticator.respond, reply, connection_reusable=connection_reusable)
    if authenticator.may_block(reply):
        return await run_auth_step(step)
    return step()
