"""kalikoctl: Kaliko's command-line tool (calicoctl/kubectl conventions).

The app is assembled in `kalikoctl.main`; each command group lives in its own module under
`kalikoctl.commands` and registers itself with ``register(app)``. Shared pieces: `output`
(printing, exit codes), `options` (``-f`` and other shared options), `offline` (a cluster
evaluated in memory).
"""
