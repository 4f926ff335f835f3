"""One module per parser; each has ``TestOneInput(data: bytes)``.

:data:`TARGETS` lists them in the order CI runs them.
"""

TARGETS = ("http_request", "http_response", "http_chunked", "http_scan", "tls_client_hello",
           "tls_server_hello", "proxy_parse", "proxy_roundtrip", "site_ini", "admin_api")
