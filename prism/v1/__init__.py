"""Generated from protos/prism/v1 by protos/generate.py."""
