"""Developer tooling, not on the request path: `dev`, the mock upstream, `try`."""
