"""`workflow run`: the worker loop, isolation of the user's function, the runner."""
