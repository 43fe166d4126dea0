"""Prism: one task in, parallel sandboxed trials out.

`prism.v1` holds the generated gRPC stubs; the other modules are what the
orchestrator and runner services share.
"""
