"""Entry points: the server main, the predict and explain CLIs, the Ray Serve application."""
