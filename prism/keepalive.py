"""Keepalive of the long-lived streams, both sides of it: a dead peer is noticed within
seconds, and the server accepts pings as often as the client sends them."""

from __future__ import annotations

# A ping every 10 s, even between calls, and 5 s for its answer: a stream whose peer vanished
# (a cut network, a frozen host) is closed within 15 s instead of waiting for TCP's timeouts.
CLIENT_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# A server that thinks a client pings too often answers GOAWAY (too_many_pings) and drops
# its streams: this one accepts pings as often as the client above sends them.
SERVER_KEEPALIVE = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]
