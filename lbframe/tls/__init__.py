"""TLS for lbframe: :mod:`.client` (connecting to members and checking
them: https monitors, ``tls = yes`` pools), :mod:`.server` (terminating:
certificates, SNI, modern defaults)."""
