"""The runner service: executes trials in fresh Docker sandboxes, exactly once per trial id."""
