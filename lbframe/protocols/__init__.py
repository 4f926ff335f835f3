"""Built-in protocol plugins: how a virtual server accepts and relays."""
