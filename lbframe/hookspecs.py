"""The hooks lbframe calls on plugins.

Registration hooks hand a plugin a registry to add factories to (tox's
``tox_register_tox_env(register)`` is the model). Event hooks tell plugins
what happened. Hooks are for wiring and events: the data path calls the
objects the factories made, never a hook per packet.
"""

from lbframe import hookspec


@hookspec
def lbframe_register_schedulers(registry):
    """Add scheduler factories: ``registry.add(name, factory)``.

    ``factory(pool, options)`` gets the frozen :class:`lbframe.config.Pool`
    and a dict of the section's keys the contract does not define; it returns
    an :class:`lbframe.interfaces.IScheduler`. It raises
    :class:`lbframe.errors.OptionError` for a bad or unknown key.
    """


@hookspec
def lbframe_register_monitors(registry):
    """Add monitor factories: ``registry.add(name, factory)``.

    ``factory(monitor, options, reactor)`` gets the frozen
    :class:`lbframe.config.Monitor`; it returns an
    :class:`lbframe.interfaces.IMonitor`.
    """


@hookspec
def lbframe_register_protocols(registry):
    """Add protocol factories: ``registry.add(name, factory)``.

    ``factory(virtual, options, site)`` validates ``virtual``'s keys and
    returns an :class:`lbframe.interfaces.IProtocol`.
    """


@hookspec
def lbframe_register_persistence_methods(registry):
    """Add persistence method factories: ``registry.add(name, factory)``.

    ``factory(profile, options)`` returns an
    :class:`lbframe.interfaces.IPersistenceMethod`.
    """


@hookspec
def lbframe_register_persistence_stores(registry):
    """Add persistence store factories by URL scheme: ``registry.add("redis", factory)``.

    ``factory(url, profile, reactor)`` returns an
    :class:`lbframe.interfaces.IPersistenceStore`.
    """


@hookspec
def lbframe_register_redundancy_drivers(registry):
    """Add redundancy driver factories: ``registry.add(name, factory)``.

    ``factory(redundancy, options, reactor)`` returns an
    :class:`lbframe.interfaces.IRedundancyDriver`.
    """


@hookspec
def lbframe_member_state_changed(pool, member, old, new, reason):
    """A member's state changed (``up``, ``down``, ``draining``, ``disabled``).

    ``pool`` and ``member`` are names; ``reason`` says why, e.g.
    ``"connect refused (3/3)"``.
    """


@hookspec
def lbframe_redundancy_state_changed(old, new):
    """This node's redundancy state changed."""


@hookspec
def lbframe_site_started(site):
    """The site (a frozen :class:`lbframe.config.Site`) started serving."""


@hookspec
def lbframe_site_reloaded(old, new):
    """A reload replaced site ``old`` with ``new``."""
