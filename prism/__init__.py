"""Prism: one task in, parallel sandboxed trials out.

`prism.v1` holds the generated gRPC stubs; the other modules are what the
services share, and the tools around them. What every service is made of:

    environ     settings from the environment, secrets from files
    logs        the one logger: JSON lines, one key schema
    lifecycle   a service process: start, serve until signalled, drain
    server      its grpc.aio server: auth, keepalive, health, reflection
    auth        the bearer-token interceptor
    rpc         errors into gRPC statuses (the `rpc` decorator)
    errors      the errors handlers raise, each with its status
    keepalive   keepalive options, client and server side
    sqlite      a store's database, on its own thread
"""
