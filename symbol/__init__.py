"""ssdkit.symbol: network graphs (pure functions returning ``mx.sym``).

``symbol_builder.get_symbol_train`` / ``get_symbol`` build SSD graphs from explicit arguments,
``symbol_factory`` holds the presets per network and input size.
"""
